//! Compiles authd's proto contract (the repository's `proto/`) into the client
//! types, with protox: no system protoc, and nothing from the server crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let protos = [
        format!("{root}/auth/v1/auth.proto"),
        format!("{root}/auth/v1/admin.proto"),
    ];
    println!("cargo:rerun-if-changed={root}");
    let descriptors = protox::compile(&protos, [root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
