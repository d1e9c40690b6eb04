//! Compiles the inventory service's `.proto` with protox (pure Rust, no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const ROOT: &str = "proto";
    const FILE: &str = "shop/inventory/v1/inventory.proto";
    println!("cargo:rerun-if-changed={ROOT}/{FILE}");
    let mut compiler = protox::Compiler::new([ROOT])?;
    compiler.include_imports(true).open_files([FILE])?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
