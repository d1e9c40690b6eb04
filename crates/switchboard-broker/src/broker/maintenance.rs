//! Maintenance: the background ticker and one round of its work over every topic: interval
//! fsyncs, lease expiry, dead-lettering, journal compaction and retention. Every step is
//! safe to repeat and to skip, so a failing step is logged and retried at the next tick.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use switchboard_storage::Retention;

use super::{Broker, Inner};
use crate::error::Result;
use crate::subscription::Subscription;
use crate::topic::Topic;

impl Broker {
    /// Runs one round of background work now: lease expiry, dead-lettering, interval fsyncs,
    /// retention and journal compaction. The ticker calls this every `tick_ms`; tests that
    /// drive a manual clock call it directly.
    ///
    /// # Errors
    /// The first storage failure met (the round still visits every topic).
    pub async fn tick(&self) -> Result<()> {
        self.check_open()?;
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        let mut first_error = None;
        for t in topics {
            for log in &t.partitions {
                log.sync_if_due();
            }
            let subs: Vec<Arc<Subscription>> = t.subscriptions.read().values().cloned().collect();
            for s in &subs {
                s.sync_if_due();
                s.tick();
                if let Err(e) = self.process_dead_letters(&t, s).await {
                    first_error.get_or_insert(e);
                }
                if let Err(e) = s.compact_if_needed(self.inner.config.journal_compact_bytes).await {
                    first_error.get_or_insert(e);
                }
            }
            if let Err(e) = apply_retention(&t, &subs) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub(super) async fn run_ticker(inner: Weak<Inner>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let broker = Broker { inner };
        if let Err(e) = broker.tick().await {
            tracing::warn!(error = %e, "Background broker work failed; it will be retried.");
        }
    }
}

fn apply_retention(t: &Topic, subs: &[Arc<Subscription>]) -> Result<()> {
    let r = &t.config.retention;
    let floors: Vec<Vec<u64>> = subs.iter().filter_map(|s| s.queue_floors()).collect();
    for (p, log) in t.partitions.iter().enumerate() {
        let min_floor = floors.iter().filter_map(|f| f.get(p).copied()).min();
        let keep_from = if r.until_acked { min_floor } else { None };
        if r.max_age_ms.is_none() && r.max_bytes.is_none() {
            if let Some(f) = keep_from {
                log.delete_segments_before(f)?;
            }
        } else {
            log.apply_retention(&Retention { max_age_ms: r.max_age_ms, max_bytes: r.max_bytes }, keep_from)?;
        }
    }
    Ok(())
}
