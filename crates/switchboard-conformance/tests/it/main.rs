//! The conformance suite against every backend this build has a harness for. Run one
//! backend with `cargo test -p switchboard-conformance embedded::`.
//!
//! A backend is a module here with a function returning its [`Harness`] and one line:
//! `switchboard_conformance::conformance_tests!(harness);`.
//!
//! [`Harness`]: switchboard_conformance::Harness

mod amqp;
mod embedded;
mod faulty;
mod nats;
mod readme;
mod remote;
