//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no `protoc` is needed)
//! into Rust types, the gRPC server and client, and the descriptor set that reflection serves.

use std::path::PathBuf;

const PROTO_ROOT: &str = "../../proto";
const PROTOS: [&str; 2] = ["switchboard/v1/switchboard.proto", "io/cloudevents/v1/cloudevents.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true).open_files(PROTOS)?;
    std::fs::write(out.join("switchboard_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        // Data stays in `bytes::Bytes` from the wire into `Message::data`, without a copy.
        .bytes(".")
        // One file that nests every package's module (`io::cloudevents::v1`, `switchboard::v1`),
        // so cross-package references resolve.
        .include_file("switchboard_proto.rs")
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
