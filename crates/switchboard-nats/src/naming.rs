//! How Switchboard names map to JetStream names.
//!
//! Stream and consumer names may not contain `.` (nor `*`, `>`, whitespace), while topic and
//! subscription names may, so names are escaped injectively: `_` becomes `__` and `.`
//! becomes `_D`; letters, digits and `-` stay. Two different topics therefore never share a
//! stream, even `a.b` and `a_b`. Names whose escape would be too long for the server (file
//! storage uses the name as a directory name) keep a prefix and end in `_H` plus a 64-bit
//! FNV-1a hash of the whole name; `_H` never occurs in a plain escape, so the long form
//! cannot collide with a short one.
//!
//! Subjects keep the topic's dots (`sb.t.orders.created`), which is what NATS tooling
//! expects, unless the topic has an empty token (`a..b`, `a.`), which a subject cannot
//! hold; those use the escaped form under a different prefix (`sb.x.a_D_Db`), so the two
//! forms never meet.

use switchboard_core::{SubscriptionName, TopicName};

/// Longest escaped name kept verbatim; longer ones are shortened with a hash.
const MAX_ESCAPED: usize = 200;

/// The stream that holds `topic`.
pub(crate) fn stream_name(topic: &TopicName) -> String {
    format!("SB_{}", escape(topic.as_str()))
}

/// The one subject of the stream that holds `topic`.
pub(crate) fn subject(topic: &TopicName) -> String {
    let t = topic.as_str();
    if t.split('.').any(str::is_empty) { format!("sb.x.{}", escape(t)) } else { format!("sb.t.{t}") }
}

/// The durable consumer of `subscription` (consumers are scoped to their stream, hence to
/// the topic).
pub(crate) fn consumer_name(subscription: &SubscriptionName) -> String {
    escape(subscription.as_str())
}

/// The injective escape described in the module docs.
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_D"),
            c => out.push(c),
        }
    }
    if out.len() <= MAX_ESCAPED {
        return out;
    }
    let mut cut = MAX_ESCAPED - 20;
    // Do not split an escape pair: the prefix must end on a pair boundary, which is where an
    // even run of trailing '_' ends.
    if out.as_bytes()[..cut].iter().rev().take_while(|b| **b == b'_').count() % 2 == 1 {
        cut -= 1;
    }
    out.truncate(cut);
    // FNV-1a: stable across Rust releases and processes, unlike `DefaultHasher`.
    out.push_str(&format!("_H{:016x}", switchboard_core::fnv1a_64(name.as_bytes())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).expect("valid")
    }

    #[test]
    fn escape_is_injective_on_tricky_pairs() {
        let names = ["a.b", "a_b", "a_Db", "a__b", "a._b", "a_.b", "aD", "a-b", "a..b", "a_D_Db"];
        let escaped: std::collections::HashSet<_> = names.iter().map(|n| escape(n)).collect();
        assert_eq!(escaped.len(), names.len());
        assert_eq!(stream_name(&topic("orders.created")), "SB_orders_Dcreated");
        assert!(!stream_name(&topic("a.b.c")).contains('.'));
    }

    #[test]
    fn long_names_are_shortened_with_a_hash() {
        let a = "x.".repeat(99) + "a";
        let b = "x.".repeat(99) + "b";
        let (ea, eb) = (escape(&a), escape(&b));
        assert!(ea.len() <= MAX_ESCAPED && eb.len() <= MAX_ESCAPED, "{}", ea.len());
        assert_ne!(ea, eb);
        assert!(ea.contains("_H"));
        let underscores = "_".repeat(200);
        assert!(escape(&underscores).len() <= MAX_ESCAPED);
    }

    #[test]
    fn subjects_keep_dots_unless_a_token_is_empty() {
        assert_eq!(subject(&topic("orders.created")), "sb.t.orders.created");
        assert_eq!(subject(&topic("a..b")), "sb.x.a_D_Db");
        assert_eq!(subject(&topic("a.")), "sb.x.a_D");
    }
}
