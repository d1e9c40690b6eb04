//! What each case needs, declared once in [`CASES`], so a case a backend cannot run is known
//! when the tests are listed (and shows as ignored, naming what is missing) rather than
//! discovered halfway through a run.

use std::sync::Arc;

use futures::future::LocalBoxFuture;
use switchboard_core::contract::{Capabilities, Capability};

use crate::{Harness, cases};

/// What a case needs of the backend (capabilities) and of its harness (a broker restart).
///
/// ```
/// use switchboard_conformance::Needs;
/// use switchboard_core::contract::{Capabilities, Capability};
///
/// let needs = Needs::all(&[Capability::Queue, Capability::Persistence]).and_restart();
/// assert_eq!(needs.unmet(Capabilities::ALL, true), None);
/// assert_eq!(
///     needs.unmet(Capabilities::ALL.without(Capability::Persistence), false).as_deref(),
///     Some("needs persistence and a broker restart")
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    all: &'static [Capability],
    one_of: &'static [Capability],
    some_off: &'static [Capability],
    restart: bool,
}

impl Needs {
    /// Nothing: the case runs on every backend.
    pub const NOTHING: Needs = Needs { all: &[], one_of: &[], some_off: &[], restart: false };

    /// Every one of `capabilities`.
    pub const fn all(capabilities: &'static [Capability]) -> Needs {
        Needs { all: capabilities, ..Needs::NOTHING }
    }

    /// A queue or a stream subscription, whichever the backend has (the cases that work on
    /// either).
    pub const fn any_mode() -> Needs {
        Needs::NOTHING.and_any_mode()
    }

    /// These needs and a queue or a stream subscription.
    #[must_use]
    pub const fn and_any_mode(self) -> Needs {
        Needs { one_of: &[Capability::Queue, Capability::Stream], ..self }
    }

    /// At least one of `capabilities` missing: a case that checks how missing features are
    /// refused has nothing to check on a backend that has them all.
    pub const fn some_off(capabilities: &'static [Capability]) -> Needs {
        Needs { some_off: capabilities, ..Needs::NOTHING }
    }

    /// These needs and a harness that can restart the broker.
    #[must_use]
    pub const fn and_restart(self) -> Needs {
        Needs { restart: true, ..self }
    }

    /// The capabilities needed, every one of them.
    pub const fn capabilities(&self) -> &'static [Capability] {
        self.all
    }

    /// True when the case restarts the broker.
    pub const fn restart(&self) -> bool {
        self.restart
    }

    /// What a backend declaring `capabilities` (and a harness that can or cannot restart its
    /// broker) lacks of these needs, as a short reason (`needs dedup and a broker restart`),
    /// or `None` when the case can run.
    pub fn unmet(&self, capabilities: Capabilities, can_restart: bool) -> Option<String> {
        let mut missing: Vec<String> =
            self.all.iter().filter(|c| !capabilities.contains(**c)).map(|c| c.name().to_owned()).collect();
        if !self.one_of.is_empty() && !self.one_of.iter().any(|c| capabilities.contains(*c)) {
            missing.push(self.one_of.iter().map(|c| c.name()).collect::<Vec<_>>().join(" or "));
        }
        if !self.some_off.is_empty() && self.some_off.iter().all(|c| capabilities.contains(*c)) {
            missing.push("a flag off".to_owned());
        }
        if self.restart && !can_restart {
            missing.push("a broker restart".to_owned());
        }
        (!missing.is_empty()).then(|| format!("needs {}", missing.join(" and ")))
    }
}

/// One case: its name (that of its function in [`cases`]), what it needs, and the function.
#[non_exhaustive]
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name, also the function's in [`cases`] and the second half of its test name
    /// (`embedded::dedup`).
    pub name: &'static str,
    /// What the case needs; the suite lists the case as ignored on a backend that lacks it,
    /// and the case itself fails at once if run there anyway.
    pub needs: Needs,
    /// Runs the case against a fresh harness (on the calling thread: a case's future is not
    /// `Send`, so block on it or run it in a `LocalSet`).
    pub run: fn(Arc<dyn Harness>) -> LocalBoxFuture<'static, anyhow::Result<()>>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).field("needs", &self.needs).finish_non_exhaustive()
    }
}

/// A [`Case`] for the function `cases::$name`, named after it.
macro_rules! case {
    ($name:ident, $needs:expr) => {
        Case { name: stringify!($name), needs: $needs, run: |h| Box::pin(cases::$name(h)) }
    };
}

use Capability::{
    Dedup, DelayedDelivery, LeaseExtension, NackDelay, PerKeyOrder, Persistence, Queue, ReplayFromStart,
    Stats, Stream, StreamGroups,
};

/// Every case and what it needs, in the order the suite lists them (and the README's table
/// does): the one place that says which backend runs which case.
pub const CASES: &[Case] = &[
    case!(publish_subscribe_metadata, Needs::any_mode()),
    case!(trace_context_round_trip, Needs::any_mode()),
    case!(fan_out_concurrent_subscribers, Needs::any_mode()),
    case!(topic_isolation, Needs::any_mode()),
    case!(publisher_flush, Needs::any_mode()),
    case!(competing_consumers, Needs::all(&[Queue])),
    case!(order_per_key, Needs::all(&[Queue, PerKeyOrder])),
    case!(resend_after_nack, Needs::all(&[Queue])),
    case!(back_pressure_prefetch, Needs::all(&[Queue])),
    case!(continue_after_errors, Needs::all(&[Queue])),
    case!(consumer_groups, Needs::all(&[Queue])),
    case!(lease_expiry_redelivers, Needs::all(&[Queue])),
    case!(lease_extension, Needs::all(&[Queue, LeaseExtension])),
    case!(drop_unsettled_delivery, Needs::all(&[Queue])),
    case!(stream_order, Needs::all(&[Stream])),
    case!(stream_resume_after_restart, Needs::all(&[Stream])),
    case!(replay_old_messages, Needs::all(&[Stream, ReplayFromStart])),
    case!(stream_group_members_split, Needs::all(&[Stream, StreamGroups])),
    case!(no_loss_across_subscriber_restarts, Needs::all(&[Queue])),
    case!(concurrent_close, Needs::all(&[Queue])),
    case!(cancelled_next_loses_nothing, Needs::any_mode()),
    case!(broker_restart_no_loss, Needs::all(&[Queue, Persistence]).and_restart()),
    case!(dead_letter_metadata, Needs::all(&[Queue])),
    case!(dead_letter_after_lease_expiry, Needs::all(&[Queue])),
    case!(delayed_delivery, Needs::all(&[Queue, DelayedDelivery])),
    case!(nack_delay, Needs::all(&[Queue, NackDelay])),
    case!(dedup, Needs::all(&[Dedup]).and_any_mode()),
    case!(stats_backlog, Needs::all(&[Queue, Stats])),
    case!(invalid_input_errors, Needs::any_mode()),
    case!(request_reply, Needs::any_mode()),
    case!(saga_over_the_backend, Needs::any_mode()),
    // Every flag whose absence `unsupported_features` probes: with one of them off it always
    // has something to check.
    case!(
        unsupported_features,
        Needs::some_off(&[
            Queue,
            Stream,
            ReplayFromStart,
            PerKeyOrder,
            Stats,
            DelayedDelivery,
            NackDelay,
            LeaseExtension
        ])
    ),
];

/// The case named `name`.
pub fn case(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_is_listed_once() {
        let names: std::collections::BTreeSet<&str> = CASES.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), CASES.len(), "a case is listed twice");
        assert_eq!(case("dedup").map(|c| c.name), Some("dedup"));
        assert!(case("no_such_case").is_none());
    }

    #[test]
    fn unmet_needs_name_what_is_missing() {
        let rabbit_like = Capabilities::NONE.with(Queue).with(Stream).with(Persistence);
        let unmet = |name: &str, caps, restart| case(name).and_then(|c| c.needs.unmet(caps, restart));
        assert_eq!(unmet("dedup", rabbit_like, true).as_deref(), Some("needs dedup"));
        assert_eq!(unmet("competing_consumers", rabbit_like, false), None);
        assert_eq!(unmet("broker_restart_no_loss", rabbit_like, true), None);
        assert_eq!(
            unmet("broker_restart_no_loss", rabbit_like, false).as_deref(),
            Some("needs a broker restart")
        );
        assert_eq!(
            unmet("publish_subscribe_metadata", Capabilities::NONE, true).as_deref(),
            Some("needs queue or stream")
        );
        assert_eq!(unmet("unsupported_features", rabbit_like, true), None);
        assert_eq!(
            unmet("unsupported_features", Capabilities::ALL, true).as_deref(),
            Some("needs a flag off")
        );
        assert_eq!(
            unmet("order_per_key", Capabilities::NONE, true).as_deref(),
            Some("needs queue and per_key_order")
        );
    }
}
