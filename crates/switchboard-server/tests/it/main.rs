//! Integration tests: a real server on loopback, used through each API.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub, dead_code)]

mod graph;
mod graphql;
mod grpc;
mod ops;
mod rest;
