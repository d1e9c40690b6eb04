//! The cases. Each takes the harness and fails with an error that says what was expected and
//! what happened. What each needs is declared in [`CASES`](crate::CASES); a case run on a
//! backend without it fails at once, naming the missing capability.

mod faults;
mod features;
mod pubsub;
mod queue;
mod request;
mod saga;
mod stream;

pub use faults::{
    broker_restart_no_loss, cancelled_next_loses_nothing, concurrent_close,
    no_loss_across_subscriber_restarts,
};
pub use features::{
    dead_letter_after_lease_expiry, dead_letter_metadata, dedup, delayed_delivery, invalid_input_errors,
    nack_delay, stats_backlog, unsupported_features,
};
pub use pubsub::{
    fan_out_concurrent_subscribers, publish_subscribe_metadata, publisher_flush, topic_isolation,
    trace_context_round_trip,
};
pub use queue::{
    back_pressure_prefetch, competing_consumers, consumer_groups, continue_after_errors,
    drop_unsettled_delivery, lease_expiry_redelivers, lease_extension, order_per_key, resend_after_nack,
};
pub use request::request_reply;
pub use saga::saga_over_the_backend;
pub use stream::{
    replay_old_messages, stream_group_members_split, stream_order, stream_resume_after_restart,
};
