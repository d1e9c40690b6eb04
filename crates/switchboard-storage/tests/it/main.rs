//! Integration tests of `switchboard-storage` (one binary, several modules).

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod common;
mod faults;
mod file;
mod fuzz_regressions;
mod group_commit;
mod model;
