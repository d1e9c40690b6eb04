//! Integration tests of `switchboard-storage` (one binary, several modules).

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod common;
mod faults;
mod file;
mod group_commit;
mod model;
