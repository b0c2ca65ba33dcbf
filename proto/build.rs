//! Compiles the protos with protox, so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/labssh/v1/labssh.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // Forwarded bytes and session I/O are moved, not copied: `bytes::Bytes` for their
    // payloads (decoding slices the received buffer).
    tonic_prost_build::configure()
        .bytes(".labssh.v1.ForwardInput.data")
        .bytes(".labssh.v1.ForwardOutput.data")
        .bytes(".labssh.v1.SessionInput.stdin")
        .bytes(".labssh.v1.SessionOutput.stdout")
        .bytes(".labssh.v1.SessionOutput.stderr")
        .bytes(".labssh.v1.WatchFrame.output")
        // Ordered, so an environment encodes the same way every time (the agents
        // hash it to tell containers made from older settings).
        .btree_map(".labssh.v1.Environment.env")
        .btree_map(".labssh.v1.Isolation.rlimits")
        .compile_fds(fds)?;
    Ok(())
}
