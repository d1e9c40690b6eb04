//! The metadata a dead letter carries, the same on every backend, and the one place that
//! writes it.

use crate::{Message, SubscriptionName, TopicName};

/// Extension attributes added to a message when it is dead-lettered.
pub mod dead_letter_ext {
    /// Why the message was dead-lettered (see [`DeadLetterReason`](super::DeadLetterReason)).
    pub const REASON: &str = "dlreason";
    /// The topic it came from.
    pub const TOPIC: &str = "dltopic";
    /// The subscription that gave up on it.
    pub const SUBSCRIPTION: &str = "dlsubscription";
    /// How many deliveries were made.
    pub const ATTEMPTS: &str = "dlattempts";
    /// The last error a consumer reported with its nack.
    pub const ERROR: &str = "dlerror";
    /// Partition of the original message.
    pub const PARTITION: &str = "dlpartition";
    /// Offset of the original message.
    pub const OFFSET: &str = "dloffset";
    /// The handler that rejected it (set by the SDK's router).
    pub const HANDLER: &str = "dlhandler";
    /// Every name above.
    pub const ALL: [&str; 8] = [REASON, TOPIC, SUBSCRIPTION, ATTEMPTS, ERROR, PARTITION, OFFSET, HANDLER];
}

/// Why a message ended up in a dead-letter topic.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Its last delivery was nacked and it had used up `max_deliveries`.
    Nacked,
    /// Its last lease ran out (the consumer died or stalled) and it had used up
    /// `max_deliveries`.
    LeaseExpired,
    /// A handler rejected it as permanently unprocessable (a poison message).
    Rejected,
}

impl DeadLetterReason {
    /// The value of the `dlreason` extension.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Nacked => "nacked",
            DeadLetterReason::LeaseExpired => "lease expired",
            DeadLetterReason::Rejected => "rejected",
        }
    }
}

/// The dead-letter topic a subscription gets when none is set: `<topic>.<subscription>.dlq`.
///
/// # Errors
/// The name would be longer than a topic name may be.
pub fn default_dead_letter_topic(
    topic: &TopicName,
    subscription: &SubscriptionName,
) -> Result<TopicName, crate::NameError> {
    TopicName::new(format!("{topic}.{subscription}.dlq"))
}

/// The longest `dlerror` kept, in characters.
pub const MAX_DEAD_LETTER_ERROR_CHARS: usize = 1024;

/// Where a dead letter came from and why: the one writer of the `dl*` metadata, used by the
/// broker, every backend that dead-letters client-side, and the SDK's router.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetterStamp<'a> {
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// The topic it came from.
    pub topic: &'a TopicName,
    /// The subscription that gave up on it.
    pub subscription: &'a SubscriptionName,
    /// Deliveries made.
    pub attempts: u32,
    /// Its partition (0 on backends without partitions).
    pub partition: u32,
    /// Its offset (stream sequence, delivery tag: the backend's position).
    pub offset: u64,
    /// The last error a consumer reported, if any.
    pub error: Option<&'a str>,
    /// The router handler that rejected it, if any.
    pub handler: Option<&'a str>,
}

impl DeadLetterStamp<'_> {
    /// Writes the metadata onto `message` as `dl*` extensions, replacing any from an earlier
    /// dead-lettering. The error keeps at most [`MAX_DEAD_LETTER_ERROR_CHARS`] characters
    /// with control characters made spaces, so the metadata is valid whatever a consumer
    /// wrote.
    pub fn stamp(&self, message: &mut Message) {
        let x = &mut message.extensions;
        x.insert(dead_letter_ext::REASON.into(), self.reason.as_str().into());
        x.insert(dead_letter_ext::TOPIC.into(), self.topic.to_string());
        x.insert(dead_letter_ext::SUBSCRIPTION.into(), self.subscription.to_string());
        x.insert(dead_letter_ext::ATTEMPTS.into(), self.attempts.to_string());
        x.insert(dead_letter_ext::PARTITION.into(), self.partition.to_string());
        x.insert(dead_letter_ext::OFFSET.into(), self.offset.to_string());
        match self.error {
            Some(e) => {
                let clean = e
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(MAX_DEAD_LETTER_ERROR_CHARS)
                    .collect();
                x.insert(dead_letter_ext::ERROR.into(), clean)
            }
            None => x.remove(dead_letter_ext::ERROR),
        };
        match self.handler {
            Some(h) => x.insert(dead_letter_ext::HANDLER.into(), h.to_owned()),
            None => x.remove(dead_letter_ext::HANDLER),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_metadata_is_valid_whatever_the_error_says() {
        let (topic, sub) = (TopicName::new("t").expect("name"), SubscriptionName::new("s").expect("name"));
        let mut m = Message::new("/s", "t", "x").with_extension(dead_letter_ext::HANDLER, "old");
        let error = format!("a\nb\tc{}", "é".repeat(5000));
        DeadLetterStamp {
            reason: DeadLetterReason::Nacked,
            topic: &topic,
            subscription: &sub,
            attempts: 3,
            partition: 2,
            offset: 9,
            error: Some(&error),
            handler: None,
        }
        .stamp(&mut m);
        let x = &m.extensions;
        assert_eq!(x[dead_letter_ext::REASON], "nacked");
        assert_eq!((x[dead_letter_ext::PARTITION].as_str(), x[dead_letter_ext::OFFSET].as_str()), ("2", "9"));
        assert!(x[dead_letter_ext::ERROR].starts_with("a b c"));
        assert_eq!(x[dead_letter_ext::ERROR].chars().count(), MAX_DEAD_LETTER_ERROR_CHARS);
        assert!(!x.contains_key(dead_letter_ext::HANDLER), "an earlier handler is not kept");
        m.validate(usize::MAX).expect("a valid message");
    }
}
