//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no `protoc` is needed)
//! into the Rust types, server and client of the inventory service.

const PROTO_ROOT: &str = "proto";
const PROTOS: [&str; 1] = ["inventory/v1/inventory.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{p}");
    }
    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true).open_files(PROTOS)?;
    tonic_prost_build::configure()
        .include_file("inventory_proto.rs")
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
