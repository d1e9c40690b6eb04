//! Idempotent publish: message ids seen within a topic's dedup window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use foldhash::fast::RandomState;
use switchboard_core::Timestamp;

/// Where the first copy of a message id was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) at: Timestamp,
}

/// The ids of one topic, bounded by age and by count (oldest forgotten first). An id is
/// stored once, shared by the map and the age order.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    window_ms: u64,
    max_entries: usize,
    seen: HashMap<Arc<str>, Seen, RandomState>,
    order: VecDeque<(Timestamp, Arc<str>)>,
    /// Ids whose first publish is still being written: a duplicate waits for the outcome.
    pending: HashSet<String>,
}

impl DedupWindow {
    pub(crate) fn new(window_ms: u64, max_entries: usize) -> DedupWindow {
        DedupWindow {
            window_ms,
            max_entries,
            seen: HashMap::default(),
            order: VecDeque::new(),
            pending: HashSet::new(),
        }
    }

    pub(crate) fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub(crate) fn enabled(&self) -> bool {
        self.window_ms > 0 && self.max_entries > 0
    }

    fn evict(&mut self, now: Timestamp) {
        let horizon = Timestamp(now.0.saturating_sub(self.window_ms));
        while let Some((at, _)) = self.order.front() {
            if *at >= horizon && self.order.len() <= self.max_entries {
                break;
            }
            if let Some((at, id)) = self.order.pop_front()
                && self.seen.get(&id).is_some_and(|s| s.at == at)
            {
                self.seen.remove(&id);
            }
        }
    }

    pub(crate) fn lookup(&mut self, id: &str, now: Timestamp) -> Option<Seen> {
        self.evict(now);
        self.seen.get(id).copied()
    }

    pub(crate) fn is_pending(&self, id: &str) -> bool {
        self.pending.contains(id)
    }

    pub(crate) fn begin(&mut self, id: &str) {
        self.pending.insert(id.to_owned());
    }

    pub(crate) fn finish(&mut self, id: &str, stored: Option<Seen>) {
        self.pending.remove(id);
        if let Some(s) = stored {
            self.remember(id.to_owned(), s);
        }
    }

    /// Makes room for `n` more ids at once (rebuilding the window at open).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.seen.reserve(n);
        self.order.reserve(n);
    }

    pub(crate) fn remember(&mut self, id: String, s: Seen) {
        let id: Arc<str> = id.into();
        self.order.push_back((s.at, id.clone()));
        self.seen.insert(id, s);
        if self.order.len() > self.max_entries {
            self.evict(s.at);
        }
    }

    /// Ids remembered now.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_by_age_and_by_count() {
        let mut d = DedupWindow::new(1_000, 2);
        let s = |o, t| Seen { partition: 0, offset: o, at: Timestamp(t) };
        d.remember("a".into(), s(0, 100));
        assert_eq!(d.lookup("a", Timestamp(1_100)), Some(s(0, 100)));
        assert_eq!(d.lookup("a", Timestamp(1_101)), None, "older than the window");
        d.remember("b".into(), s(1, 2_000));
        d.remember("c".into(), s(2, 2_001));
        d.remember("d".into(), s(3, 2_002));
        assert_eq!(d.lookup("b", Timestamp(2_002)), None, "beyond max entries");
        assert!(d.lookup("c", Timestamp(2_002)).is_some() && d.lookup("d", Timestamp(2_002)).is_some());
        assert_eq!(d.len(), 2);
    }
}
