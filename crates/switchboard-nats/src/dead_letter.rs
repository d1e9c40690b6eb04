//! Dead letters, done by the backend because JetStream has none
//! (`native_dead_letter: false`).
//!
//! The consumer's `MaxDeliver` is unlimited; the backend counts with JetStream's own
//! delivery count (`attempt` = the message's `num_delivered`) and acts at two points:
//!
//! - a nack of attempt `max_deliveries` (or later): the message is published to the
//!   dead-letter topic with reason `nacked` (and `dlerror` when the nack had an error);
//! - a delivery with attempt > `max_deliveries`: the previous attempt's lease ran out (the
//!   consumer died or stalled), so the message is dead-lettered with reason
//!   `lease expired` before anyone sees it.
//!
//! The dead letter is the original message (every attribute and extension kept) plus
//! `dlreason`, `dltopic`, `dlsubscription`, `dlattempts`, `dlerror`, `dlpartition` = `0`,
//! `dloffset` = the stream sequence. It is published awaiting the PubAck, and only then is
//! the original terminated (`+TERM`): a crash in between delivers it again and the repeat
//! is deduplicated by the dead-letter topic (`Nats-Msg-Id` is derived from the stream,
//! consumer and sequence). If publishing fails the original is nacked with a short delay
//! and retried on its next delivery, so a message is never lost between the two.

use switchboard_core::Message;
use switchboard_core::backend::DeadLetterStamp;
use switchboard_core::contract::{BusError, DeadLetterReason};

use crate::errors::backend_msg;
use crate::pull::SubShared;
use crate::{headers, naming};

/// Publishes `original` (stream sequence `seq`) to the subscription's dead-letter topic.
pub(crate) async fn publish(
    sub: &SubShared,
    original: &Message,
    reason: DeadLetterReason,
    seq: u64,
    attempts: u32,
    error: Option<String>,
) -> Result<(), BusError> {
    let Some(dlq) = &sub.dead_letter_topic else {
        return Err(backend_msg("the subscription has no dead-letter topic", false));
    };
    let m = dead_letter(original, sub, reason, seq, attempts, error);
    let dedup = format!("dl:{}:{}:{seq}", naming::stream_name(&sub.topic), naming::consumer_name(&sub.name));
    crate::publish::publish_encoded(&sub.inner, dlq, vec![(headers::encode(&m, &dedup), m.data.clone())])
        .await
}

/// The dead letter: the original plus the `dl*` extensions.
fn dead_letter(
    original: &Message,
    sub: &SubShared,
    reason: DeadLetterReason,
    seq: u64,
    attempts: u32,
    error: Option<String>,
) -> Message {
    let mut m = original.clone();
    DeadLetterStamp {
        reason,
        topic: &sub.topic,
        subscription: &sub.name,
        attempts,
        partition: 0,
        offset: seq,
        error: error.as_deref(),
        handler: None,
    }
    .stamp(&mut m);
    m
}
