//! Compiles the gRPC protocol files in `proto/` with protox (a protobuf compiler in Rust, so no
//! system `protoc` is needed) into tonic servers and clients, and writes the encoded descriptor
//! set that server reflection answers with.

use prost::Message;

const PROTOS: &[&str] = &["proto/inference.proto", "proto/tensorflow_serving/apis/serving.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), fds.encode_to_vec())?;
    // Tensor bytes as `Bytes`: decoding slices the received message instead of copying it.
    tonic_prost_build::configure().build_server(true).build_client(true).bytes(".").compile_fds(fds)?;
    Ok(())
}
