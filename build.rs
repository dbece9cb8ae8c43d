//! Compiles the proto contract with protox (no system protoc needed) and writes the
//! file descriptor sets that gRPC reflection serves: ours, and Envoy's external
//! authorization API (`proto/vendor`, whose Rust types come from `envoy-types`, so
//! only its descriptors are made here).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/auth/v1/auth.proto", "proto/auth/v1/admin.proto"];
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("authd_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    let envoy = protox::compile(
        ["envoy/service/auth/v3/external_auth.proto"],
        ["proto/vendor"],
    )?;
    std::fs::write(
        out_dir.join("envoy_ext_authz_descriptor.bin"),
        prost::Message::encode_to_vec(&envoy),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
