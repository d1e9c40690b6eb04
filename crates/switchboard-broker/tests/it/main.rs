//! Integration tests of the embedded broker (one binary; see the modules).
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod bad_input;
mod crash;
mod faults;
mod model;
mod publish;
mod queue;
mod stream;
mod util;
