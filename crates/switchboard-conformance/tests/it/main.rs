//! The conformance suite against every backend this build has a harness for, plus the checks
//! that the suite can fail and that the README's capability table is true. A
//! `harness = false` binary over libtest-mimic, so that a case a backend cannot run is listed
//! as ignored (the reason in brackets) instead of passing. Run one backend with
//! `cargo test -p switchboard-conformance --test it -- embedded::`.
//!
//! A backend is a module here with a function returning its [`Harness`] and a `target()`
//! that describes it (declared capabilities, restart, the outside service it needs);
//! [`Target::trials`] makes its trials.
//!
//! [`Harness`]: switchboard_conformance::Harness
//! [`Target::trials`]: switchboard_conformance::Target::trials

use std::process::ExitCode;

mod amqp;
mod embedded;
mod faulty;
mod nats;
mod readme;
mod remote;

fn main() -> ExitCode {
    let targets = [embedded::target(), remote::target(), amqp::target(), nats::target()];
    let mut trials: Vec<_> = targets.iter().flat_map(|t| t.trials()).collect();
    trials.extend(faulty::trials());
    trials.extend(readme::trials(&targets));
    switchboard_conformance::run(trials).exit_code()
}
