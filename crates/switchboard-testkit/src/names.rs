//! Names and messages.

use std::fmt::Display;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use switchboard_core::contract::Delivery;
use switchboard_core::{Message, SubscriptionName, TopicName};

/// The topic `name`.
///
/// # Panics
/// If `name` is not a valid topic name (the message names it).
pub fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap_or_else(|e| panic!("invalid topic name {name:?}: {e}"))
}

/// The subscription `name`.
///
/// # Panics
/// If `name` is not a valid subscription name (the message names it).
pub fn sub(name: &str) -> SubscriptionName {
    SubscriptionName::new(name).unwrap_or_else(|e| panic!("invalid subscription name {name:?}: {e}"))
}

/// `<prefix>-<16 hex digits>`: a name no other test run has used, for brokers that keep
/// topics between runs (RabbitMQ, NATS) and tests that run in parallel.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // `RandomState` is seeded randomly per process; the counter and the time keep names
    // apart within one.
    let suffix = RandomState::new().hash_one((std::process::id(), nanos, n));
    format!("{prefix}-{suffix:016x}")
}

/// The topic [`unique`]`(prefix)`.
///
/// # Panics
/// If the result is not a valid topic name.
pub fn unique_topic(prefix: &str) -> TopicName {
    topic(&unique(prefix))
}

/// A message whose data is the text of `data`, with the deterministic id `id-<data>` (so a
/// test can name the message it expects, and publishing it twice is a duplicate where the
/// backend deduplicates), source `/test` and type `test.event`.
pub fn msg(data: impl Display) -> Message {
    let data = data.to_string();
    let id = format!("id-{data}");
    Message::new("/test", "test.event", data).with_id(id)
}

/// The data of a delivery as text.
///
/// # Panics
/// If the data is not UTF-8.
pub fn body(d: &Delivery) -> String {
    String::from_utf8(d.message().data.to_vec()).expect("message data is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_carries_its_text_and_a_deterministic_id() {
        let m = msg(3);
        assert_eq!((m.id.as_str(), &m.data[..]), ("id-3", &b"3"[..]));
        assert_eq!(msg("a b").id, msg("a b").id);
    }

    #[test]
    fn unique_names_differ_and_are_valid_topics() {
        let (a, b) = (unique_topic("it.x"), unique_topic("it.x"));
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("it.x-"), "{a}");
    }

    #[test]
    #[should_panic(expected = "invalid topic name \"\"")]
    fn an_invalid_name_panics_with_the_name() {
        topic("");
    }
}
