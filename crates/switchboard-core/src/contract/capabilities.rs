//! What a backend can do, declared rather than discovered.

/// Feature flags of a backend. A `false` means the backend refuses the feature with
/// [`BusError::Unsupported`](super::BusError::Unsupported) (never silently ignores it), and
/// the conformance suite skips the tests that need it, naming the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Queue subscriptions: competing consumers, per-message ack and nack.
    pub queue: bool,
    /// Stream subscriptions: every message in publish order per partition (per topic when
    /// the backend has no partitions).
    pub stream: bool,
    /// A new stream subscription can start from the oldest retained message.
    pub replay_from_start: bool,
    /// A new queue subscription starting at `Start::Earliest` also receives the messages
    /// published before it was created (otherwise its queue begins at its creation, as
    /// RabbitMQ's do).
    pub queue_replay: bool,
    /// Queue subscriptions with `ordered_by_key`: one message per partition key in flight.
    pub per_key_order: bool,
    /// `deliver_at` on publish.
    pub delayed_delivery: bool,
    /// A nack can ask for redelivery after a delay.
    pub nack_delay: bool,
    /// The lease (ack deadline) of a queue delivery can be extended.
    pub lease_extension: bool,
    /// The broker itself moves a message to a dead-letter topic after `max_deliveries`
    /// (otherwise the backend does it client-side, see the backend's docs).
    pub native_dead_letter: bool,
    /// A repeated message id within the dedup window is stored once.
    pub dedup: bool,
    /// Acknowledged messages survive a broker restart.
    pub persistence: bool,
    /// Members of one stream subscription split the partitions between them and commit
    /// offsets the broker keeps (otherwise a stream subscription has one reader at a time).
    pub stream_groups: bool,
    /// [`Subscriber::stats`](super::Subscriber::stats) reports backlog and lag.
    pub stats: bool,
}

impl Capabilities {
    /// Every flag on: the embedded broker and `switchboard serve`.
    pub const ALL: Capabilities = Capabilities {
        queue: true,
        stream: true,
        replay_from_start: true,
        queue_replay: true,
        per_key_order: true,
        delayed_delivery: true,
        nack_delay: true,
        lease_extension: true,
        native_dead_letter: true,
        dedup: true,
        persistence: true,
        stream_groups: true,
        stats: true,
    };

    /// Every flag off; backends start here and switch on what they have.
    pub const NONE: Capabilities = Capabilities {
        queue: false,
        stream: false,
        replay_from_start: false,
        queue_replay: false,
        per_key_order: false,
        delayed_delivery: false,
        nack_delay: false,
        lease_extension: false,
        native_dead_letter: false,
        dedup: false,
        persistence: false,
        stream_groups: false,
        stats: false,
    };

    /// Each flag with its name, for capability tables and skip messages.
    pub fn flags(&self) -> [(&'static str, bool); 13] {
        [
            ("queue", self.queue),
            ("stream", self.stream),
            ("replay_from_start", self.replay_from_start),
            ("queue_replay", self.queue_replay),
            ("per_key_order", self.per_key_order),
            ("delayed_delivery", self.delayed_delivery),
            ("nack_delay", self.nack_delay),
            ("lease_extension", self.lease_extension),
            ("native_dead_letter", self.native_dead_letter),
            ("dedup", self.dedup),
            ("persistence", self.persistence),
            ("stream_groups", self.stream_groups),
            ("stats", self.stats),
        ]
    }
}
