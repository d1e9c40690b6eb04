//! # switchboard-proto
//!
//! The gRPC contract of `switchboard serve`, generated from `proto/` at build time with protox
//! (a pure-Rust protobuf compiler, so no `protoc` is needed): `switchboard::v1` (the
//! `Switchboard` service, its server and client) and `io::cloudevents::v1` (the CloudEvents
//! protobuf format its messages use). A crate of its own so that clients (the SDK's remote
//! backend) need not depend on the server.
//!
//! Next to the generated code, the parts of the contract both sides must agree on:
//!
//! - [`event`]: a `switchboard_core::Message` as a CloudEvent (`From`) and back (`TryFrom`,
//!   with a typed [`CloudEventError`]), and [`is_text`], which data goes as text;
//! - [`timestamp`]: the broker's millisecond timestamps as protobuf ones;
//! - [`reason`]: machine-readable error reasons in gRPC status details.

#[allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    rustdoc::all
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/switchboard_proto.rs"));
}

pub mod event;
pub mod reason;
pub mod timestamp;

pub use event::{CloudEventError, is_text};
pub use generated::{io, switchboard};

/// The encoded descriptors of every `.proto` file (with imports), for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchboard_descriptor.bin"));
