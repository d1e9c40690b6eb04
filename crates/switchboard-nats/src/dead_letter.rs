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

use switchboard_core::contract::{BusError, DeadLetterReason, dead_letter_ext as ext};
use switchboard_core::{MAX_ATTRIBUTE_LEN, Message};

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
    let x = &mut m.extensions;
    x.insert(ext::REASON.into(), reason.as_str().into());
    x.insert(ext::TOPIC.into(), sub.topic.to_string());
    x.insert(ext::SUBSCRIPTION.into(), sub.name.to_string());
    x.insert(ext::ATTEMPTS.into(), attempts.to_string());
    x.insert(ext::PARTITION.into(), "0".into());
    x.insert(ext::OFFSET.into(), seq.to_string());
    match error {
        Some(e) => x.insert(ext::ERROR.into(), clean(&e)),
        None => x.remove(ext::ERROR),
    };
    m
}

/// An error text as a valid attribute value: control characters become spaces, and it is
/// cut to [`MAX_ATTRIBUTE_LEN`] bytes.
fn clean(e: &str) -> String {
    let mut s: String = e.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.len() > MAX_ATTRIBUTE_LEN {
        let mut cut = MAX_ATTRIBUTE_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn errors_become_valid_attributes() {
        assert_eq!(clean("a\nb\tc"), "a b c");
        assert!(clean(&"é".repeat(5000)).len() <= switchboard_core::MAX_ATTRIBUTE_LEN);
    }
}
