//! Compiles the protos with protox, so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/labssh/v1/labssh.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // Forwarded bytes are moved, not copied: `bytes::Bytes` for their payloads.
    tonic_prost_build::configure()
        .bytes(".labssh.v1.ForwardInput.data")
        .bytes(".labssh.v1.ForwardOutput.data")
        .compile_fds(fds)?;
    Ok(())
}
