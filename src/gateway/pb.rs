//! The generated `portcullis.v1` messages, clients and servers (see build.rs), the encoded
//! descriptor set for reflection; JSON ↔ `google.protobuf.Value` conversions are re-exported
//! from [`crate::grpc::json`].
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("portcullis.v1");

/// The encoded `FileDescriptorSet` of `proto/portcullis/v1/*.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));

pub use crate::grpc::json::{MAX_DEPTH, json_to_value, value_to_json};
