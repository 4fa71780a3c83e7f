//! Compiles the kubelet gRPC API mirrors under `proto/` with `protox` (pure Rust, no system `protoc`) and
//! generates prost messages plus tonic clients and servers from the resulting descriptor set. The encoded
//! descriptor set is also written to `$OUT_DIR/file_descriptor_set.bin` so the crate can expose it.

use std::{env, fs, io, path::PathBuf};

use prost::Message;

/// Proto files, relative to the `proto/` include directory.
const PROTOS: &[&str] = &[
    "dra/v1/api.proto",
    "dra/v1beta1/api.proto",
    "pluginregistration/v1/api.proto",
    "dra-health/v1alpha1/api.proto",
    "dra-health/v1/api.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", include.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", include.join(proto).display());
    }

    let fds = protox::compile(PROTOS, [&include]).map_err(|e| io::Error::other(format!("{e:?}")))?;
    fs::write(out_dir.join("file_descriptor_set.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&out_dir)
        .compile_fds(fds)?;
    Ok(())
}
