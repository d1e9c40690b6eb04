//! A backend under test as the test binary lists it: what it declares, before anything
//! connects, and the trials that follow from that.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, ensure};
use libtest_mimic::Trial;
use switchboard_core::contract::Capabilities;

use crate::{CASES, Case, Harness, async_trial, run_case};

type MakeHarness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<Arc<dyn Harness>>>>> + Send + Sync>;

/// One backend the suite runs against, described without connecting to it: its name, the
/// capabilities it declares, whether its harness can restart the broker, whether the outside
/// service it needs is there, and how to build a harness for one case.
///
/// [`trials`](Target::trials) turns it into one trial per case, named `<name>::<case>`; a
/// case whose [`Needs`](crate::Needs) the target lacks is listed as ignored, the reason in
/// brackets (`test [needs dedup] amqp::dedup ... ignored`). Run anyway (`-- --ignored`), such
/// a trial fails at once with that reason rather than run the case on a backend without the
/// capability.
pub struct Target {
    name: &'static str,
    capabilities: Capabilities,
    can_restart: bool,
    missing_service: Option<MissingService>,
    harness: MakeHarness,
}

struct MissingService {
    label: &'static str,
    why: String,
}

impl Target {
    /// A backend called `name` (the first half of its test names, and what its harness's
    /// [`Harness::name`] says) that declares `capabilities`; `harness` builds one harness,
    /// called once per case.
    pub fn new<F, Fut>(name: &'static str, capabilities: Capabilities, harness: F) -> Target
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Arc<dyn Harness>>> + 'static,
    {
        Target {
            name,
            capabilities,
            can_restart: false,
            missing_service: None,
            harness: Arc::new(move || Box::pin(harness())),
        }
    }

    /// The harness can restart the broker ([`Harness::restart_broker`]).
    #[must_use]
    pub fn with_restart(mut self) -> Target {
        self.can_restart = true;
        self
    }

    /// The backend needs an outside service (a broker, a binary), found or not by `found`
    /// (checked once, when the tests are listed; `Err` says what is missing and how to fix
    /// it). When it is missing, every trial of this target is listed as ignored, marked with
    /// `label` (`no RabbitMQ`) and the reason printed once — unless [`ci`] is true, where the
    /// trials are listed as usual and fail, since CI must not pass without them.
    #[must_use]
    pub fn needs_service(mut self, label: &'static str, found: Result<(), String>) -> Target {
        self.missing_service = found.err().map(|why| MissingService { label, why });
        self
    }

    /// The name given to [`Target::new`].
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The capabilities the backend declares.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// True when the harness can restart the broker.
    pub fn can_restart(&self) -> bool {
        self.can_restart
    }

    /// One trial per case of [`CASES`] (`<name>::<case>`), and
    /// `<name>::declared_capabilities_are_the_backends`, which connects and checks that the
    /// capabilities declared here are the connected backend's, so the two cannot drift.
    pub fn trials(&self) -> Vec<Trial> {
        let missing = match &self.missing_service {
            Some(m) if ci() => {
                eprintln!("note: {}: {}; CI is set, so its trials run (and fail) anyway", self.name, m.why);
                None
            }
            Some(m) => {
                eprintln!("note: {}: {}; its trials are ignored (CI is not set)", self.name, m.why);
                Some(m)
            }
            None => None,
        };
        let mut trials = vec![self.declared_trial()];
        trials.extend(CASES.iter().map(|case| self.case_trial(case)));
        match missing {
            Some(m) => trials
                .into_iter()
                .map(|t| {
                    let (name, why) = (t.name().to_owned(), m.why.clone());
                    Trial::test(name, move || Err(why.into())).with_kind(m.label).with_ignored_flag(true)
                })
                .collect(),
            None => trials,
        }
    }

    fn case_trial(&self, case: &'static Case) -> Trial {
        let name = format!("{}::{}", self.name, case.name);
        if let Some(reason) = case.needs.unmet(self.capabilities, self.can_restart) {
            let why = format!("{name} {reason}, which the {} target does not declare", self.name);
            return Trial::test(name, move || Err(why.into())).with_kind(reason).with_ignored_flag(true);
        }
        let harness = self.harness.clone();
        async_trial(name, move || async move {
            let harness = harness().await.context("build the harness")?;
            run_case(case, harness).await
        })
    }

    fn declared_trial(&self) -> Trial {
        let (name, declared, harness) = (self.name, self.capabilities, self.harness.clone());
        async_trial(format!("{name}::declared_capabilities_are_the_backends"), move || async move {
            let harness = harness().await.context("build the harness")?;
            let result = async {
                ensure!(
                    harness.name() == name,
                    "the {name} target's harness calls itself {}",
                    harness.name()
                );
                let bus = harness.connect().await.context("connect")?;
                let reported = bus.capabilities();
                let _ = bus.close().await;
                ensure!(
                    reported == declared,
                    "the {name} target declares {declared:?}, but its backend reports {reported:?}"
                );
                Ok(())
            }
            .await;
            harness.shutdown().await;
            result
        })
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .field("can_restart", &self.can_restart)
            .field("missing_service", &self.missing_service.as_ref().map(|m| &m.why))
            .finish_non_exhaustive()
    }
}

/// True when the `CI` environment variable is set to anything but empty, `0` or `false`: a
/// missing service then fails its trials instead of having them ignored.
pub fn ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_anything_but_unset_empty_zero_or_false() {
        for (value, expected) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(ci_value(value), expected, "CI={value:?}");
        }
    }
}
