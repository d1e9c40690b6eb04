//! RabbitMQ object names for topics and subscriptions.
//!
//! Every name must be injective (two different topics or (topic, subscription) pairs never
//! share a RabbitMQ object) and fit RabbitMQ's 255-byte limit, while topic and subscription
//! names are each up to 200 bytes of `[A-Za-z0-9._-]`.
//!
//! - topic exchange: `sb.t.<topic>` (at most 205 bytes);
//! - topic stream (the retained log that stream subscriptions read): `sb.s.<topic>`;
//! - queue of a queue subscription: `sb.q.<len(topic)>.<topic>.<subscription>`. The length
//!   prefix makes the split between topic and subscription unambiguous although both may
//!   contain `.`. When that is longer than 255 bytes the name is
//!   `sb.q.h.<sha1 of the pair>.<readable prefix>`; the `h` can never start the first form
//!   (which has a digit there), so the two forms cannot collide, and the long form is unique
//!   up to a SHA-1 collision between two valid name pairs;
//! - offset store of a stream subscription (see `offsets.rs`):
//!   `sb.o.<len(topic)>.<topic>.<subscription>`, long form `sb.o.h.<sha1 of the pair>.…`,
//!   built like the queue name. The different prefix keeps it apart from every queue name.

use sha1::{Digest, Sha1};
use switchboard_core::{SubscriptionName, TopicName};

/// RabbitMQ's limit on exchange and queue names, in bytes.
const MAX_LEN: usize = 255;

/// The fanout exchange of a topic.
pub(crate) fn exchange(topic: &TopicName) -> String {
    format!("sb.t.{topic}")
}

/// The stream queue that keeps a topic's messages for stream subscriptions.
pub(crate) fn stream(topic: &TopicName) -> String {
    format!("sb.s.{topic}")
}

/// The quorum queue of a queue subscription.
pub(crate) fn queue(topic: &TopicName, subscription: &SubscriptionName) -> String {
    pair("sb.q", topic, subscription)
}

/// The offset store of a stream subscription, which also marks that it exists.
pub(crate) fn offsets(topic: &TopicName, subscription: &SubscriptionName) -> String {
    pair("sb.o", topic, subscription)
}

/// `<prefix>.<len(topic)>.<topic>.<subscription>`, or its hashed form when that is too long.
fn pair(prefix: &str, topic: &TopicName, subscription: &SubscriptionName) -> String {
    let plain = format!("{prefix}.{}.{topic}.{subscription}", topic.as_str().len());
    if plain.len() <= MAX_LEN {
        return plain;
    }
    let mut hasher = Sha1::new();
    hasher.update(topic.as_str().len().to_string().as_bytes());
    hasher.update(b":");
    hasher.update(topic.as_str().as_bytes());
    hasher.update(b"/");
    hasher.update(subscription.as_str().as_bytes());
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let mut name = format!("{prefix}.h.{digest}.{topic}.{subscription}");
    name.truncate(MAX_LEN);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    fn s(x: &str) -> SubscriptionName {
        SubscriptionName::new(x).unwrap()
    }

    #[test]
    fn dots_do_not_make_names_collide() {
        assert_ne!(queue(&t("a.b"), &s("c")), queue(&t("a"), &s("b.c")));
        assert_eq!(queue(&t("orders"), &s("billing")), "sb.q.6.orders.billing");
        assert_eq!(offsets(&t("orders"), &s("billing")), "sb.o.6.orders.billing");
        assert_ne!(offsets(&t("a.b"), &s("c")), offsets(&t("a"), &s("b.c")));
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let long = "x".repeat(200);
        let a = queue(&t(&long), &s(&long));
        let b = queue(&t(&long), &s(&"y".repeat(200)));
        assert!(a.len() <= MAX_LEN && b.len() <= MAX_LEN);
        assert!(a.starts_with("sb.q.h."));
        assert_ne!(a, b);
        let o = offsets(&t(&long), &s(&long));
        assert!(o.len() <= MAX_LEN && o.starts_with("sb.o.h."));
        assert_ne!(o, a);
        assert!(exchange(&t(&long)).len() <= MAX_LEN);
        assert!(stream(&t(&long)).len() <= MAX_LEN);
    }
}
