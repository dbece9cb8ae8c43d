//! The cheap generator for the hot scenarios (`health`, `validate`, `check-role`,
//! and `mixed`'s validate stream): unary gRPC calls sent with the `h2` crate
//! directly, without tonic's client stack (tower buffer, hyper's dispatch channel,
//! per-call encoding and decoding into owned messages).
//!
//! Every request body is encoded once, before the run, into a complete gRPC frame;
//! a call clones the frame's `Bytes` (a reference count), opens a stream on one of a
//! few HTTP/2 connections, reads the reply's one DATA frame and its trailers, and
//! checks `grpc-status`. The server cannot tell it from any other gRPC client: the
//! same headers, frames and flow control, so its per-call cost is the one measured
//! with tonic, but the generator's own cost per call is a fraction of the server's,
//! and a single load core saturates a single server core.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use authd::grpc::pb::{
    CheckPermissionRequest, CheckPermissionResponse, CheckRoleRequest, CheckRoleResponse,
    ValidateTokenRequest,
};
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::{net::TcpStream, task::JoinHandle};
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckResponse};

use crate::{
    load::Caller,
    wire::{decode_frame, encode_frame, grpc_status},
};

pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
pub const VALIDATE_TOKEN: &str = "/auth.v1.AuthService/ValidateToken";
pub const CHECK_ROLE: &str = "/auth.v1.AuthService/CheckRole";
pub const CHECK_PERMISSION: &str = "/auth.v1.AuthService/CheckPermission";

/// Looked up as a `HeaderName` rather than a `&str`, which would be parsed each time.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Windows as large as hyper's client uses (so tonic's): with the small replies
/// here the client never has to send WINDOW_UPDATE frames the server must process.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// A few HTTP/2 connections to the server, each driven by its own task. The tasks
/// end when the connections are dropped.
pub struct Connections {
    senders: Vec<SendRequest<Bytes>>,
    tasks: Vec<JoinHandle<()>>,
    authority: String,
}

impl Connections {
    pub async fn open(addr: SocketAddr, count: u32) -> anyhow::Result<Connections> {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let mut connections = Connections {
            senders: Vec::new(),
            tasks: Vec::new(),
            authority: addr.to_string(),
        };
        for _ in 0..count.max(1) {
            let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .with_context(|| format!("connecting to {addr}: timed out"))?
                .with_context(|| format!("connecting to {addr}"))?;
            // A request is one small write: it must not wait for an ACK (Nagle).
            tcp.set_nodelay(true)?;
            let (sender, connection) = builder
                .handshake::<_, Bytes>(tcp)
                .await
                .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
            connections.tasks.push(tokio::spawn(async move {
                let _ = connection.await;
            }));
            connections.senders.push(sender);
        }
        Ok(connections)
    }

    /// The connection worker `worker` sends on: workers are spread evenly.
    fn sender(&self, worker: usize) -> SendRequest<Bytes> {
        self.senders[worker % self.senders.len()].clone()
    }

    /// A caller for worker `worker` that sends `bodies` in turn, starting at its
    /// own offset, to `path`, and judges each reply's message with `check`.
    pub fn caller(&self, worker: usize, path: &'static str, bodies: &Bodies) -> Unary {
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| unreachable!("a socket address and a static path"));
        Unary {
            sender: self.sender(worker),
            uri,
            headers: grpc_headers(),
            bodies: bodies.frames.clone(),
            next: worker % bodies.frames.len(),
            check: bodies.check,
        }
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a unary call sends to the server: its headers besides the pseudo-headers.
fn grpc_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers
}

/// Judges a reply's message (the frame's payload): `Err` names the failure.
pub type Check = fn(&[u8]) -> Result<(), &'static str>;

/// Request bodies, each already a gRPC frame, and how to judge their replies.
#[derive(Clone)]
pub struct Bodies {
    frames: Arc<[Bytes]>,
    check: Check,
}

impl Bodies {
    pub fn health() -> Bodies {
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        Bodies {
            frames: Arc::from([encode_frame(&request)]),
            check: serving,
        }
    }

    pub fn validate(tokens: &[String]) -> Bodies {
        Bodies {
            frames: frames(tokens, |token| ValidateTokenRequest {
                token: token.to_owned(),
            }),
            check: non_empty,
        }
    }

    pub fn check_role(tokens: &[String], role: &str) -> Bodies {
        Bodies {
            frames: frames(tokens, |token| CheckRoleRequest {
                token: token.to_owned(),
                role: role.to_owned(),
            }),
            check: allowed,
        }
    }

    pub fn check_permission(tokens: &[String], permission: &str) -> Bodies {
        Bodies {
            frames: frames(tokens, |token| CheckPermissionRequest {
                token: token.to_owned(),
                permission: permission.to_owned(),
            }),
            check: permitted,
        }
    }
}

fn frames<M: Message>(tokens: &[String], make: impl Fn(&str) -> M) -> Arc<[Bytes]> {
    let frames: Vec<Bytes> = tokens.iter().map(|t| encode_frame(&make(t))).collect();
    if frames.is_empty() {
        // No tokens: one empty-token request, which the server refuses (counted).
        Arc::from([encode_frame(&make(""))])
    } else {
        frames.into()
    }
}

fn serving(message: &[u8]) -> Result<(), &'static str> {
    let reply = HealthCheckResponse::decode(message).map_err(|_| "BAD_MESSAGE")?;
    if reply.status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err("NOT_SERVING")
    }
}

/// A ValidateToken reply always carries the user's id, so an OK reply with an empty
/// message is wrong; the rest is not decoded (that would be client work the tonic
/// generator did, but that says nothing about the server).
fn non_empty(message: &[u8]) -> Result<(), &'static str> {
    if message.is_empty() {
        Err("EMPTY_REPLY")
    } else {
        Ok(())
    }
}

/// A "no" is a wrong set-up (say, --role admin), not a fast answer.
fn allowed(message: &[u8]) -> Result<(), &'static str> {
    let reply = CheckRoleResponse::decode(message).map_err(|_| "BAD_MESSAGE")?;
    if reply.allowed {
        Ok(())
    } else {
        Err("NOT_ALLOWED")
    }
}

/// As [`allowed`], for CheckPermission.
fn permitted(message: &[u8]) -> Result<(), &'static str> {
    let reply = CheckPermissionResponse::decode(message).map_err(|_| "BAD_MESSAGE")?;
    if reply.allowed {
        Ok(())
    } else {
        Err("NOT_ALLOWED")
    }
}

/// One worker's unary calls on one connection.
pub struct Unary {
    sender: SendRequest<Bytes>,
    uri: Uri,
    headers: HeaderMap,
    bodies: Arc<[Bytes]>,
    next: usize,
    check: Check,
}

impl Unary {
    async fn exchange(&mut self) -> Result<(), String> {
        std::future::poll_fn(|cx| self.sender.poll_ready(cx))
            .await
            .map_err(h2_error)?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let (response, mut stream) = self.sender.send_request(request, false).map_err(h2_error)?;
        stream
            .send_data(self.bodies[self.next].clone(), true)
            .map_err(h2_error)?;
        self.next = (self.next + 1) % self.bodies.len();

        let (head, mut body) = response.await.map_err(h2_error)?.into_parts();
        if head.status != StatusCode::OK {
            return Err(format!("HTTP_{}", head.status.as_u16()));
        }
        // An error is usually "trailers only": grpc-status in the one HEADERS frame.
        let trailers_only = head.headers.get(&GRPC_STATUS).is_some();
        if trailers_only {
            grpc_status(head.headers.get(&GRPC_STATUS).map(HeaderValue::as_bytes))?;
        }
        let message = read_body(&mut body).await?;
        let trailers = body.trailers().await.map_err(h2_error)?;
        if !trailers_only {
            grpc_status(
                trailers
                    .as_ref()
                    .and_then(|t| t.get(&GRPC_STATUS))
                    .map(HeaderValue::as_bytes),
            )?;
        }
        let message = decode_frame(&message).map_err(|e| e.name().to_owned())?;
        (self.check)(message).map_err(str::to_owned)
    }
}

impl Caller for Unary {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        self.exchange()
    }
}

/// The whole response body. A small reply arrives in one DATA frame, which is
/// returned as is; a larger one is put together.
async fn read_body(body: &mut h2::RecvStream) -> Result<Bytes, String> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2_error)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        match (&mut first, &mut joined) {
            (None, None) => first = Some(chunk),
            (Some(_), None) => {
                let mut buf = BytesMut::from(first.take().unwrap_or_default());
                buf.extend_from_slice(&chunk);
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// An HTTP/2 failure, by its reason when it has one: `H2_REFUSED_STREAM`.
fn h2_error(err: h2::Error) -> String {
    match err.reason() {
        Some(reason) => format!("H2_{reason:?}"),
        None if err.is_io() => "TRANSPORT".to_owned(),
        None => "H2_ERROR".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use authd::grpc::pb::ValidateTokenResponse;
    use h2::server::SendResponse;
    use http::Response;

    use super::*;

    /// An HTTP/2 server that answers ValidateToken by the token: each token names
    /// the reply to give. It lives as long as the test's runtime.
    async fn server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(tcp).await.expect("handshake");
                    while let Some(Ok((request, respond))) = connection.accept().await {
                        tokio::spawn(answer(request, respond));
                    }
                });
            }
        });
        addr
    }

    async fn answer(request: Request<h2::RecvStream>, mut respond: SendResponse<Bytes>) {
        let (head, mut body) = request.into_parts();
        let well_formed = head.method == Method::POST
            && head.uri.path() == VALIDATE_TOKEN
            && head.headers.get("content-type").map(HeaderValue::as_bytes)
                == Some(b"application/grpc")
            && head.headers.get("te").map(HeaderValue::as_bytes) == Some(b"trailers");
        let received = read_body(&mut body).await.expect("request body");
        let token = decode_frame(&received)
            .ok()
            .and_then(|m| ValidateTokenRequest::decode(m).ok())
            .map(|r| r.token)
            .unwrap_or_default();
        let reply = |status: u16| {
            Response::builder()
                .status(status)
                .header("content-type", "application/grpc")
                .body(())
                .expect("valid response")
        };
        let trailers = |code: &'static str| {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static(code));
            t
        };
        let user = encode_frame(&ValidateTokenResponse {
            user_id: "u1".into(),
            ..ValidateTokenResponse::default()
        });
        if !well_formed {
            let mut only = reply(200);
            only.headers_mut().extend(trailers("3"));
            let _ = respond.send_response(only, true);
            return;
        }
        match token.as_str() {
            "ok" | "split" => {
                let mut stream = respond.send_response(reply(200), false).expect("head");
                if token == "split" {
                    let (a, b) = user.split_at(3);
                    let _ = stream.send_data(Bytes::copy_from_slice(a), false);
                    let _ = stream.send_data(Bytes::copy_from_slice(b), false);
                } else {
                    let _ = stream.send_data(user, false);
                }
                let _ = stream.send_trailers(trailers("0"));
            }
            "unauthenticated" => {
                // Trailers only, as tonic answers an error.
                let mut only = reply(200);
                only.headers_mut().extend(trailers("16"));
                let _ = respond.send_response(only, true);
            }
            "empty" => {
                let mut stream = respond.send_response(reply(200), false).expect("head");
                let _ = stream.send_data(encode_frame(&ValidateTokenResponse::default()), false);
                let _ = stream.send_trailers(trailers("0"));
            }
            "no-trailers" => {
                let mut stream = respond.send_response(reply(200), false).expect("head");
                let _ = stream.send_data(user, true);
            }
            "truncated" => {
                let mut stream = respond.send_response(reply(200), false).expect("head");
                let _ = stream.send_data(user.slice(..user.len() - 1), false);
                let _ = stream.send_trailers(trailers("0"));
            }
            _ => {
                let _ = respond.send_response(reply(503), true);
            }
        }
    }

    #[tokio::test]
    async fn calls_are_judged_by_frame_message_and_grpc_status() {
        let connections = Connections::open(server().await, 1).await.expect("connect");
        let tokens: Vec<String> = [
            "ok",
            "split",
            "unauthenticated",
            "empty",
            "no-trailers",
            "truncated",
            "other",
        ]
        .map(str::to_owned)
        .into();
        let mut caller = connections.caller(0, VALIDATE_TOKEN, &Bodies::validate(&tokens));
        let mut outcomes = Vec::new();
        for _ in &tokens {
            outcomes.push(caller.call().await);
        }
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Ok(()),
                Err("UNAUTHENTICATED".to_owned()),
                Err("EMPTY_REPLY".to_owned()),
                Err("MISSING_GRPC_STATUS".to_owned()),
                Err("BAD_FRAME_TRUNCATED".to_owned()),
                Err("HTTP_503".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn workers_start_on_their_own_body_and_take_turns() {
        let connections = Connections::open(server().await, 2).await.expect("connect");
        let tokens: Vec<String> = ["ok", "unauthenticated"].map(str::to_owned).into();
        let bodies = Bodies::validate(&tokens);
        let mut second = connections.caller(1, VALIDATE_TOKEN, &bodies);
        assert_eq!(second.call().await, Err("UNAUTHENTICATED".to_owned()));
        assert_eq!(second.call().await, Ok(()));
    }
}
