//! What a backend can do, declared rather than discovered.
//!
//! A set of [`Capability`] values rather than a struct of booleans, so a new flag (the one a
//! Kafka backend needs, say) is a new enum variant: code that builds or reads a set keeps
//! compiling, because the enum is `#[non_exhaustive]` and the set has no public fields.

use std::fmt;

/// One feature a backend may have. A backend without it refuses the feature with
/// [`BusError::Unsupported`](super::BusError::Unsupported) (never silently ignores it), and
/// the conformance suite skips the tests that need it, naming the flag.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// Queue subscriptions: competing consumers, per-message ack and nack.
    Queue,
    /// Stream subscriptions: every message in publish order per partition (per topic when
    /// the backend has no partitions).
    Stream,
    /// A new stream subscription can start from the oldest retained message.
    ReplayFromStart,
    /// A new queue subscription starting at `Start::Earliest` also receives the messages
    /// published before it was created (otherwise its queue begins at its creation, as
    /// RabbitMQ's do).
    QueueReplay,
    /// Queue subscriptions with `ordered_by_key`: one message per partition key in flight.
    PerKeyOrder,
    /// `deliver_at` on publish.
    DelayedDelivery,
    /// A nack can ask for redelivery after a delay.
    NackDelay,
    /// The lease (ack deadline) of a queue delivery can be extended.
    LeaseExtension,
    /// The broker itself moves a message to a dead-letter topic after `max_deliveries`
    /// (otherwise the backend does it client-side, see the backend's docs).
    NativeDeadLetter,
    /// A repeated message id within the dedup window is stored once.
    Dedup,
    /// Acknowledged messages survive a broker restart.
    Persistence,
    /// Members of one stream subscription split the partitions between them and commit
    /// offsets the broker keeps (otherwise a stream subscription has one reader at a time).
    StreamGroups,
    /// [`Subscriber::stats`](crate::backend::Subscriber::stats) reports backlog and lag.
    Stats,
}

impl Capability {
    /// Every capability this version knows, in the order capability tables list them.
    pub const ALL: [Capability; 13] = [
        Capability::Queue,
        Capability::Stream,
        Capability::ReplayFromStart,
        Capability::QueueReplay,
        Capability::PerKeyOrder,
        Capability::DelayedDelivery,
        Capability::NackDelay,
        Capability::LeaseExtension,
        Capability::NativeDeadLetter,
        Capability::Dedup,
        Capability::Persistence,
        Capability::StreamGroups,
        Capability::Stats,
    ];

    /// The flag's name in capability tables, skip messages and errors (`per_key_order`).
    pub const fn name(self) -> &'static str {
        match self {
            Capability::Queue => "queue",
            Capability::Stream => "stream",
            Capability::ReplayFromStart => "replay_from_start",
            Capability::QueueReplay => "queue_replay",
            Capability::PerKeyOrder => "per_key_order",
            Capability::DelayedDelivery => "delayed_delivery",
            Capability::NackDelay => "nack_delay",
            Capability::LeaseExtension => "lease_extension",
            Capability::NativeDeadLetter => "native_dead_letter",
            Capability::Dedup => "dedup",
            Capability::Persistence => "persistence",
            Capability::StreamGroups => "stream_groups",
            Capability::Stats => "stats",
        }
    }

    const fn bit(self) -> u64 {
        1 << self as u32
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of [`Capability`] values a backend has.
///
/// ```
/// use switchboard_core::contract::{Capabilities, Capability};
///
/// const RABBIT_LIKE: Capabilities =
///     Capabilities::NONE.with(Capability::Queue).with(Capability::Stream).with(Capability::Persistence);
/// assert!(RABBIT_LIKE.contains(Capability::Queue));
/// assert!(!RABBIT_LIKE.contains(Capability::Dedup));
/// assert_eq!(Capabilities::ALL.without(Capability::Dedup).iter().count(), Capability::ALL.len() - 1);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u64);

impl Capabilities {
    /// Nothing; backends start here and add what they have.
    pub const NONE: Capabilities = Capabilities(0);

    /// Every capability this version knows: the embedded broker and `switchboard serve`.
    pub const ALL: Capabilities = {
        let mut set = Capabilities::NONE;
        let mut i = 0;
        while i < Capability::ALL.len() {
            set = set.with(Capability::ALL[i]);
            i += 1;
        }
        set
    };

    /// The set with `capability` added.
    #[must_use]
    pub const fn with(self, capability: Capability) -> Capabilities {
        Capabilities(self.0 | capability.bit())
    }

    /// The set with `capability` removed.
    #[must_use]
    pub const fn without(self, capability: Capability) -> Capabilities {
        Capabilities(self.0 & !capability.bit())
    }

    /// True when the backend has `capability`.
    pub const fn contains(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// The capabilities in the set, in [`Capability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter().fold(Capabilities::NONE, Capabilities::with)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Capability::name)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_has_its_own_bit_and_name() {
        let names: std::collections::BTreeSet<_> = Capability::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Capability::ALL.len());
        for c in Capability::ALL {
            let alone = Capabilities::NONE.with(c);
            assert_eq!(alone.iter().collect::<Vec<_>>(), vec![c]);
            assert!(Capabilities::ALL.contains(c) && !Capabilities::ALL.without(c).contains(c));
        }
    }

    #[test]
    fn a_set_collects_and_prints_by_name() {
        let set: Capabilities = [Capability::Dedup, Capability::Queue].into_iter().collect();
        assert_eq!(format!("{set:?}"), r#"{"queue", "dedup"}"#);
    }
}
