//! Server reflection, as grpcurl uses it: the services are listed without a proto
//! file, and the `google.rpc` error details our errors carry can be resolved, so a
//! `BadRequest` shows as fields instead of raw bytes.

use prost::Message;
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

use crate::helpers::{TestApp, TestDb};

async fn ask(app: &TestApp, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection call")
        .into_inner();
    answers
        .message()
        .await
        .expect("reflection answer")
        .and_then(|answer| answer.message_response)
        .expect("a response")
}

#[tokio::test]
async fn reflection_lists_the_services_and_resolves_error_details() {
    let mut app = TestApp::spawn(TestDb::sqlite()).await;

    let MessageResponse::ListServicesResponse(list) =
        ask(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "auth.v1.AuthService",
        "auth.v1.AdminService",
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }

    // What grpcurl asks for when an error carries a google.rpc.BadRequest.
    let MessageResponse::FileDescriptorResponse(files) = ask(
        &app,
        MessageRequest::FileContainingSymbol("google.rpc.BadRequest".into()),
    )
    .await
    else {
        panic!("expected the file that defines google.rpc.BadRequest");
    };
    let defines_bad_request = files.file_descriptor_proto.iter().any(|bytes| {
        let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor");
        file.package() == "google.rpc" && file.message_type.iter().any(|m| m.name() == "BadRequest")
    });
    assert!(defines_bad_request);

    // Envoy's ext_authz is described too, with the messages it takes.
    let MessageResponse::FileDescriptorResponse(files) = ask(
        &app,
        MessageRequest::FileContainingSymbol("envoy.service.auth.v3.Authorization".into()),
    )
    .await
    else {
        panic!("expected the file that defines envoy.service.auth.v3.Authorization");
    };
    let files: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor")
        })
        .collect();
    assert!(files
        .iter()
        .any(|file| file.package() == "envoy.service.auth.v3"
            && file.service.iter().any(|s| s.name() == "Authorization")
            && file.message_type.iter().any(|m| m.name() == "CheckRequest")));

    app.stop().await;
}
