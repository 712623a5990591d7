//! Build script: compiles the gateway's protobuf API and makes Envoy's protobuf descriptors
//! available for gRPC reflection.
//!
//! `proto/portcullis/v1/*.proto` is parsed with `protox` (pure Rust, no system `protoc`) and
//! turned into Rust by `tonic-prost-build`; its encoded `FileDescriptorSet` is written to
//! `OUT_DIR/portcullis_descriptor.bin` for the gateway's reflection service.
//!
//! The `envoy-types` crate ships the encoded `FileDescriptorSet` of the Envoy API it was
//! generated from (`src/generated/types.bin`) but does not export it. With
//! `enable-reflection`, the ext_authz listener serves it so that `grpcurl` and friends can
//! describe `envoy.service.auth.v3.Authorization`. The file is found in Cargo's registry
//! checkout of the exact `envoy-types` version in `Cargo.lock`; when it cannot be found (for
//! example in a vendored build), reflection serves the health service only and a build
//! warning says so.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(e) = compile_gateway_protos(&out) {
        // The crate cannot build without its API: fail the build with the parser's message
        // (file:line:col).
        eprintln!("error: compiling proto/portcullis/v1: {e}");
        std::process::exit(1);
    }
    let dest = out.join("envoy_descriptors.bin");
    let bytes = envoy_descriptor_set().unwrap_or_else(|| {
        println!(
            "cargo:warning=envoy-types descriptors not found; reflection will not describe ext_authz"
        );
        Vec::new()
    });
    if let Err(e) = std::fs::write(&dest, bytes) {
        println!("cargo:warning=cannot write {}: {e}", dest.display());
    }
}

/// Compiles every `.proto` under `proto/portcullis/v1` into `OUT_DIR/portcullis.v1.rs` and
/// writes the descriptor set next to it.
fn compile_gateway_protos(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir.join("proto");
    let dir = root.join("portcullis/v1");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    std::fs::write(
        out.join("portcullis_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // One `google.protobuf.Value` type in the crate: envoy-types' (the Check path's).
        .extern_path(
            ".google.protobuf.Value",
            "::envoy_types::pb::google::protobuf::Value",
        )
        .build_client(true)
        .build_server(true)
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}

fn envoy_descriptor_set() -> Option<Vec<u8>> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let version = locked_version(&manifest_dir.join("Cargo.lock"), "envoy-types")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let registries = std::fs::read_dir(cargo_home.join("registry").join("src")).ok()?;
    for registry in registries.flatten() {
        let candidate = registry
            .path()
            .join(format!("envoy-types-{version}"))
            .join("src/generated/types.bin");
        if let Ok(bytes) = std::fs::read(&candidate) {
            println!("cargo:rerun-if-changed={}", candidate.display());
            return Some(bytes);
        }
    }
    None
}

/// The version of `name` recorded in a Cargo.lock.
fn locked_version(lock: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"") {
            let next = lines.next()?.trim();
            return next
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string);
        }
    }
    None
}
