//! The checker: from the writer's receipts and the reader's deliveries and confirmed settles,
//! what was lost, duplicated beyond at-least-once, redelivered, or reordered.
//!
//! - **lost**: a publish with a receipt that no delivery of the subscription ever carried.
//! - **duplicate beyond at-least-once**: a delivery of a message whose settle the server had
//!   already confirmed to this reader (an ack of that id; a commit past that offset).
//! - **redelivery** (allowed): a message delivered again while its settle was unconfirmed.
//! - **reordered**: a first delivery of a key with a lower sequence number than one already
//!   delivered. Keys publish one message at a time, so sequence order is receipt order.
//! - **stored twice**: a message delivered from a position other than the one its receipt
//!   named, which only a second copy can be (a retried publish that dedup did not absorb).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::events::{Event, MessageId};
use super::worker::SubKind;

/// Examples kept per finding, for the report.
const SAMPLES: usize = 5;

/// What the writer's log says.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishFigures {
    /// Publishes with a receipt.
    pub acked: u64,
    /// Of those, publishes that took more than one attempt (an earlier one had no answer).
    pub retried: u64,
    /// Of those, publishes whose receipt said an earlier attempt had been stored: ambiguity
    /// the dedup window absorbed.
    pub dedup_absorbed: u64,
    /// Failed publish attempts.
    pub failed_attempts: u64,
}

/// What one subscription's deliveries show.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SubscriptionCheck {
    /// The subscription.
    pub name: String,
    /// How it was consumed.
    pub kind: Option<SubKind>,
    /// Whether the broker promises per-key order of first deliveries on it.
    pub order_promised: bool,
    /// Deliveries received, redeliveries included.
    pub deliveries: u64,
    /// Distinct messages delivered.
    pub distinct: u64,
    /// Settles the server confirmed (acked messages or commits).
    pub confirmed_settles: u64,
    /// Acknowledged publishes never delivered.
    pub lost: u64,
    /// Deliveries after the message's settle was confirmed.
    pub duplicates_beyond_at_least_once: u64,
    /// Deliveries again while the settle was unconfirmed (allowed).
    pub redeliveries: u64,
    /// First deliveries out of publish order within a key.
    pub reordered: u64,
    /// Messages delivered from a second stored copy.
    pub stored_twice: u64,
    /// Messages delivered whose publish got no receipt (allowed: the writer gave up on
    /// them after the stop signal, or the receipt was lost with the connection).
    pub delivered_without_receipt: u64,
    /// Examples of each finding (`lost: k3-17`, …).
    pub samples: Vec<String>,
}

impl SubscriptionCheck {
    /// Findings that break a guarantee, for the report.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        let name = &self.name;
        if self.lost > 0 {
            v.push(format!("{name}: {} acknowledged publishes were never delivered", self.lost));
        }
        if self.duplicates_beyond_at_least_once > 0 {
            v.push(format!(
                "{name}: {} deliveries came after their ack/commit was confirmed",
                self.duplicates_beyond_at_least_once
            ));
        }
        if self.stored_twice > 0 {
            v.push(format!("{name}: {} messages were stored twice despite dedup", self.stored_twice));
        }
        if self.order_promised && self.reordered > 0 {
            v.push(format!("{name}: {} first deliveries out of per-key order", self.reordered));
        }
        if self.distinct == 0 {
            v.push(format!("{name}: nothing was delivered, so nothing was checked"));
        }
        v
    }

    fn sample(&mut self, what: &str, id: &str) {
        if self.samples.len() < SAMPLES * 4 {
            self.samples.push(format!("{what}: {id}"));
        }
    }
}

/// Figures of the writer's log.
pub(crate) fn publishes(writer: &[Event]) -> PublishFigures {
    let mut f = PublishFigures::default();
    for e in writer {
        match e {
            Event::Acked { attempts, duplicate, .. } => {
                f.acked += 1;
                f.retried += u64::from(*attempts > 1);
                f.dedup_absorbed += u64::from(*duplicate);
            }
            Event::Finished { failures, .. } => f.failed_attempts = *failures,
            _ => {}
        }
    }
    f
}

/// Checks one subscription's part of the reader's log against the writer's receipts.
pub(crate) fn subscription(
    name: &str,
    kind: SubKind,
    writer: &[Event],
    reader: &[Event],
) -> SubscriptionCheck {
    let receipts: HashMap<&str, (u32, u64)> = writer
        .iter()
        .filter_map(|e| match e {
            Event::Acked { id, partition, offset, .. } => Some((id.as_str(), (*partition, *offset))),
            _ => None,
        })
        .collect();
    let mut c = SubscriptionCheck {
        name: name.to_owned(),
        kind: Some(kind),
        order_promised: kind.order_promised(),
        ..Default::default()
    };
    let mut seen: HashMap<&str, (u32, u64)> = HashMap::new();
    let mut acked: HashSet<&str> = HashSet::new();
    let mut committed: HashMap<u32, u64> = HashMap::new();
    let mut last_seq: HashMap<u32, u64> = HashMap::new();
    for e in reader {
        match e {
            Event::Delivered { sub, id, partition, offset, .. } if sub == name => {
                c.deliveries += 1;
                let position = (*partition, *offset);
                if receipts.get(id.as_str()).is_some_and(|r| *r != position) {
                    c.stored_twice += 1;
                    c.sample("stored twice", id);
                }
                if seen.insert(id, position).is_some() {
                    let confirmed = match kind {
                        SubKind::Queue | SubKind::OrderedQueue => acked.contains(id.as_str()),
                        SubKind::Stream => committed.get(partition).is_some_and(|c| *c > *offset),
                    };
                    if confirmed {
                        c.duplicates_beyond_at_least_once += 1;
                        c.sample("delivered after confirmed settle", id);
                    } else {
                        c.redeliveries += 1;
                    }
                    continue;
                }
                if let Some(m) = MessageId::parse(id) {
                    let last = last_seq.entry(m.key).or_insert(m.seq);
                    if m.seq < *last {
                        c.reordered += 1;
                        c.sample("reordered", id);
                    }
                    *last = (*last).max(m.seq);
                }
            }
            Event::AckConfirmed { sub, id } if sub == name => {
                c.confirmed_settles += 1;
                acked.insert(id);
            }
            Event::CommitConfirmed { sub, partition, offset } if sub == name => {
                c.confirmed_settles += 1;
                let floor = committed.entry(*partition).or_default();
                *floor = (*floor).max(*offset);
            }
            _ => {}
        }
    }
    c.distinct = seen.len() as u64;
    let mut lost: Vec<&str> = receipts.keys().filter(|id| !seen.contains_key(*id)).copied().collect();
    lost.sort_unstable();
    c.lost = lost.len() as u64;
    for id in lost.iter().take(SAMPLES) {
        c.sample("lost", id);
    }
    c.delivered_without_receipt = seen.keys().filter(|id| !receipts.contains_key(*id)).count() as u64;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(key: u32, seq: u64, offset: u64) -> Event {
        Event::Acked {
            id: MessageId { key, seq }.render(),
            partition: key,
            offset,
            attempts: 1,
            duplicate: false,
            t_ms: 0,
        }
    }

    fn delivered(key: u32, seq: u64, offset: u64) -> Event {
        Event::Delivered {
            sub: "s".into(),
            id: MessageId { key, seq }.render(),
            partition: key,
            offset,
            attempt: 1,
        }
    }

    fn ack(key: u32, seq: u64) -> Event {
        Event::AckConfirmed { sub: "s".into(), id: MessageId { key, seq }.render() }
    }

    fn writer() -> Vec<Event> {
        vec![acked(0, 0, 0), acked(0, 1, 1), acked(1, 0, 0)]
    }

    #[test]
    fn a_clean_log_passes() {
        let reader = vec![delivered(0, 0, 0), ack(0, 0), delivered(0, 1, 1), delivered(1, 0, 0)];
        let c = subscription("s", SubKind::OrderedQueue, &writer(), &reader);
        assert!(c.violations().is_empty(), "{c:?}");
        assert_eq!((c.distinct, c.lost, c.redeliveries), (3, 0, 0));
    }

    #[test]
    fn an_acknowledged_publish_never_delivered_is_lost() {
        let reader = vec![delivered(0, 0, 0), delivered(1, 0, 0)];
        let c = subscription("s", SubKind::Queue, &writer(), &reader);
        assert_eq!(c.lost, 1);
        assert!(c.samples.contains(&"lost: k0-1".to_owned()));
        assert_eq!(c.violations().len(), 1);
    }

    #[test]
    fn a_redelivery_is_allowed_until_the_ack_is_confirmed_and_a_duplicate_after() {
        let reader = vec![
            delivered(0, 0, 0),
            delivered(0, 0, 0), // ack not confirmed yet: allowed
            ack(0, 0),
            delivered(0, 0, 0), // after the confirmation: a violation
            delivered(0, 1, 1),
            delivered(1, 0, 0),
        ];
        let c = subscription("s", SubKind::Queue, &writer(), &reader);
        assert_eq!((c.redeliveries, c.duplicates_beyond_at_least_once), (1, 1));
        assert_eq!(c.violations().len(), 1);
    }

    #[test]
    fn stream_commits_confirm_every_offset_below_them() {
        let commit = Event::CommitConfirmed { sub: "s".into(), partition: 0, offset: 1 };
        let reader = vec![
            delivered(0, 0, 0),
            delivered(0, 1, 1),
            commit,
            delivered(0, 1, 1), // offset 1 is not below the commit: a redelivery
            delivered(0, 0, 0), // offset 0 is: a duplicate
            delivered(1, 0, 0),
        ];
        let c = subscription("s", SubKind::Stream, &writer(), &reader);
        assert_eq!((c.redeliveries, c.duplicates_beyond_at_least_once), (1, 1));
    }

    #[test]
    fn reordering_fails_only_where_order_is_promised() {
        let reader = vec![delivered(0, 1, 1), delivered(0, 0, 0), delivered(1, 0, 0)];
        let plain = subscription("s", SubKind::Queue, &writer(), &reader);
        assert_eq!(plain.reordered, 1);
        assert!(plain.violations().is_empty());
        let ordered = subscription("s", SubKind::OrderedQueue, &writer(), &reader);
        assert_eq!(ordered.violations().len(), 1);
    }

    #[test]
    fn a_copy_at_another_position_is_stored_twice() {
        let reader = vec![delivered(0, 0, 0), delivered(0, 1, 1), delivered(1, 0, 0), delivered(0, 1, 7)];
        let c = subscription("s", SubKind::Queue, &writer(), &reader);
        assert_eq!(c.stored_twice, 1);
        assert!(!c.violations().is_empty());
    }

    #[test]
    fn nothing_delivered_is_not_a_pass() {
        let c = subscription("s", SubKind::Stream, &[], &[]);
        assert!(!c.violations().is_empty());
    }
}
