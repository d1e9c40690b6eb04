//! # switchboard-conformance
//!
//! One test suite every Switchboard SDK backend passes (the embedded broker,
//! `switchboard serve` over the network, RabbitMQ, NATS JetStream), in the spirit of
//! Watermill's universal pub/sub tests, parameterized by the backend's
//! [`Capabilities`](switchboard_core::contract::Capabilities): a case that needs a flag the
//! backend lacks is skipped, naming the flag, and
//! [`unsupported_features`](cases::unsupported_features) checks that each missing feature is
//! refused with `BusError::Unsupported` rather than ignored.
//!
//! A backend's test module provides a [`Harness`] (connections to one broker, optionally a
//! broker restart) and expands [`conformance_tests!`] with a function that builds one:
//!
//! ```ignore
//! async fn embedded_harness() -> Arc<dyn Harness> { /* … */ }
//! mod embedded {
//!     switchboard_conformance::conformance_tests!(crate::embedded_harness);
//! }
//! ```
//!
//! Every case uses unique topic and subscription names (so cases can share a broker and run
//! in parallel), bounds every wait (a broken backend fails, it does not hang), asserts exact
//! sets and counts, and never fails on speed alone: timing is checked only as "not before"
//! bounds and reported otherwise.

mod harness;
mod outcome;
mod util;

pub mod cases;

pub use harness::{Harness, Timing};
pub use outcome::{Outcome, run_case};

/// Every case, in the order [`conformance_tests!`] generates them (for reports and README
/// tables). Each is a function of the same name in [`cases`].
pub const CASES: &[&str] = &[
    "publish_subscribe_metadata",
    "trace_context_round_trip",
    "fan_out_concurrent_subscribers",
    "topic_isolation",
    "publisher_flush",
    "competing_consumers",
    "order_per_key",
    "resend_after_nack",
    "back_pressure_prefetch",
    "continue_after_errors",
    "consumer_groups",
    "lease_expiry_redelivers",
    "lease_extension",
    "drop_unsettled_delivery",
    "stream_order",
    "stream_resume_after_restart",
    "replay_old_messages",
    "stream_group_members_split",
    "no_loss_across_subscriber_restarts",
    "concurrent_close",
    "cancelled_next_loses_nothing",
    "broker_restart_no_loss",
    "dead_letter_metadata",
    "dead_letter_after_lease_expiry",
    "delayed_delivery",
    "nack_delay",
    "dedup",
    "stats_backlog",
    "invalid_input_errors",
    "unsupported_features",
];

/// Expands to one `#[tokio::test]` per case (multi-threaded runtime, 2 workers) plus a test
/// that the generated list matches [`CASES`]. The argument is a function (path or closure)
/// called with no arguments that returns a future of an `Arc<dyn Harness>`; each test builds
/// its own harness with it. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
///
/// ```ignore
/// mod embedded {
///     switchboard_conformance::conformance_tests!(crate::embedded_harness);
/// }
/// ```
/// `cargo test -p switchboard-conformance embedded::` then runs that backend alone.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_tests!(
            $harness;
            publish_subscribe_metadata,
            trace_context_round_trip,
            fan_out_concurrent_subscribers,
            topic_isolation,
            publisher_flush,
            competing_consumers,
            order_per_key,
            resend_after_nack,
            back_pressure_prefetch,
            continue_after_errors,
            consumer_groups,
            lease_expiry_redelivers,
            lease_extension,
            drop_unsettled_delivery,
            stream_order,
            stream_resume_after_restart,
            replay_old_messages,
            stream_group_members_split,
            no_loss_across_subscriber_restarts,
            concurrent_close,
            cancelled_next_loses_nothing,
            broker_restart_no_loss,
            dead_letter_metadata,
            dead_letter_after_lease_expiry,
            delayed_delivery,
            nack_delay,
            dedup,
            stats_backlog,
            invalid_input_errors,
            unsupported_features,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness: ::std::sync::Arc<dyn $crate::Harness> = ($harness)().await;
                $crate::run_case(::std::stringify!($case), harness, $crate::cases::$case).await;
            }
        )+

        #[test]
        fn every_case_is_generated() {
            ::std::assert_eq!(&[$(::std::stringify!($case)),+][..], $crate::CASES);
        }
    };
}
