//! Spans waiting for their other half, keyed by the span id both halves name: a client span
//! by its own id and a server span by its parent; a producer span by its own id and a
//! consumer span by its parent or a link. Bounded in count, and every entry leaves after
//! the wait, matched or not.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::span::{SpanId, TraceId};

pub(crate) type Key = (TraceId, SpanId);

/// A half waiting.
#[derive(Clone, Debug)]
pub(crate) enum Half {
    /// A client span, for its server span.
    Client(ClientHalf),
    /// A server span whose parent is a client span not seen yet.
    Server { service: Arc<str>, seconds: f64, error: bool },
    /// A producer span: kept for the whole wait, since every subscription's consumer may
    /// name it.
    Producer { start_ns: u64 },
    /// A consumer span whose producer has not been seen yet.
    Consumer { service: Arc<str>, subscription: Arc<str>, end_ns: u64 },
}

#[derive(Clone, Debug)]
pub(crate) struct ClientHalf {
    pub(crate) service: Arc<str>,
    pub(crate) seconds: f64,
    pub(crate) error: bool,
    pub(crate) peer: Option<Arc<str>>,
    pub(crate) circuit_open: bool,
}

#[derive(Default)]
pub(crate) struct Pending {
    waiting: HashMap<Key, (u64, Vec<Half>)>,
    /// Insertion order, for expiry: `(inserted at, key)`; a key re-inserted later is
    /// expired by its newest entry only.
    order: VecDeque<(u64, Key)>,
    len: usize,
}

impl Pending {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds a half; false if `max` halves wait already.
    pub(crate) fn push(&mut self, key: Key, half: Half, now_s: u64, max: usize) -> bool {
        if self.len >= max {
            return false;
        }
        let entry = self.waiting.entry(key).or_insert_with(|| (now_s, Vec::new()));
        entry.0 = now_s;
        entry.1.push(half);
        self.order.push_back((now_s, key));
        self.len += 1;
        true
    }

    /// Removes and returns the halves under `key` that `take` accepts.
    pub(crate) fn take(&mut self, key: &Key, mut take: impl FnMut(&Half) -> bool) -> Vec<Half> {
        let Some((_, halves)) = self.waiting.get_mut(key) else { return Vec::new() };
        let (taken, kept): (Vec<Half>, Vec<Half>) = halves.drain(..).partition(|h| take(h));
        self.len -= taken.len();
        if kept.is_empty() {
            self.waiting.remove(key);
        } else {
            *halves = kept;
        }
        taken
    }

    /// Looks at the halves under `key` without removing them.
    pub(crate) fn peek(&self, key: &Key) -> &[Half] {
        self.waiting.get(key).map_or(&[], |(_, h)| h.as_slice())
    }

    /// Removes every entry older than `wait` seconds and returns its halves.
    pub(crate) fn expire(&mut self, now_s: u64, wait: u64) -> Vec<Half> {
        let mut expired = Vec::new();
        while let Some(&(at, key)) = self.order.front() {
            if at + wait > now_s {
                break;
            }
            self.order.pop_front();
            if let Some((inserted, _)) = self.waiting.get(&key)
                && *inserted == at
                && let Some((_, halves)) = self.waiting.remove(&key)
            {
                self.len -= halves.len();
                expired.extend(halves);
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer() -> Half {
        Half::Producer { start_ns: 0 }
    }

    #[test]
    fn halves_expire_after_the_wait_and_the_count_follows() {
        let mut p = Pending::default();
        assert!(p.push(([1; 16], [1; 8]), producer(), 100, 10));
        assert!(p.push(([2; 16], [2; 8]), producer(), 105, 10));
        assert_eq!(p.expire(109, 10).len(), 0);
        assert_eq!(p.expire(110, 10).len(), 1);
        assert_eq!(p.len(), 1);
        assert_eq!(p.expire(200, 10).len(), 1);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn the_bound_refuses_more_halves() {
        let mut p = Pending::default();
        assert!(p.push(([1; 16], [1; 8]), producer(), 0, 1));
        assert!(!p.push(([2; 16], [2; 8]), producer(), 0, 1));
    }

    #[test]
    fn a_taken_half_does_not_expire_later() {
        let mut p = Pending::default();
        let key = ([1; 16], [1; 8]);
        p.push(key, producer(), 0, 10);
        assert_eq!(p.take(&key, |_| true).len(), 1);
        assert!(p.expire(100, 10).is_empty());
        assert_eq!(p.len(), 0);
    }
}
