//! The metadata a dead letter carries, the same on every backend.

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
