//! # switchboard-conformance
//!
//! One test suite every Switchboard SDK backend passes (the embedded broker,
//! `switchboard serve` over the network, RabbitMQ, NATS JetStream), in the spirit of
//! Watermill's universal pub/sub tests, parameterized by the backend's declared
//! [`Capabilities`](switchboard_core::contract::Capabilities).
//!
//! [`CASES`] lists every case with what it [`Needs`]: capabilities, and for
//! `broker_restart_no_loss` a harness that can restart the broker. A backend's test module
//! describes its backend as a [`Target`] (its declared capabilities, whether its harness can
//! restart the broker, whether an outside service it needs is there) without connecting, so
//! [`Target::trials`] knows when the tests are listed which cases the backend cannot run:
//! those show as **ignored** in `cargo test`, the reason in brackets, and
//! [`unsupported_features`](cases::unsupported_features) checks that each missing feature is
//! refused with `BusError::Unsupported` rather than ignored. A case run anyway
//! (`-- --ignored`) fails at once, naming what is missing.
//!
//! The test binary is a `harness = false` target over libtest-mimic:
//!
//! ```ignore
//! // tests/it/main.rs, with `harness = false` for this test in Cargo.toml
//! fn main() -> std::process::ExitCode {
//!     let target = Target::new("embedded", Capabilities::ALL, embedded_harness).with_restart();
//!     switchboard_conformance::run(target.trials()).exit_code()
//! }
//! async fn embedded_harness() -> anyhow::Result<Arc<dyn Harness>> { /* … */ }
//! ```
//!
//! `cargo test -p switchboard-conformance --test it -- embedded::` then runs that backend
//! alone, and `-- --nocapture` shows each case's notes (measured lateness and the like).
//!
//! Every case uses unique topic and subscription names (so cases can share a broker and run
//! in parallel), bounds every wait (a broken backend fails, it does not hang), asserts exact
//! sets and counts, and never fails on speed alone: timing is checked only as "not before"
//! bounds and reported otherwise.

mod case;
mod harness;
mod run;
mod target;
mod util;

pub mod cases;

pub use case::{CASES, Case, Needs, case};
pub use harness::{Harness, Timing};
pub use run::{async_trial, run, run_case};
pub use target::{Target, ci};
