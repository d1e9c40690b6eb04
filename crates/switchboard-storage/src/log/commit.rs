//! The group-commit driver: the background job that runs fsync rounds, and what a failed
//! round does to the log. The decisions of who drives and who waits for which round are the
//! synchronisation core's (`group`); this file does the I/O around them: what a round
//! covers (sealed segments, the active one, the directory), publishing to readers under
//! `always` only after the fsync, and cutting the log back when an fsync fails.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::warn;

use super::{Inner, Log, Point, State};
use crate::config::FsyncPolicy;
use crate::error::StorageError;
use crate::segment::Segment;

/// One fsync round: what it covers.
struct Round {
    sealed: Vec<Arc<Segment>>,
    target: Point,
    sync_active: bool,
    sync_dir: bool,
}

/// The right to run the background fsync job. If the job never starts (the runtime is
/// shutting down and dropped it), dropping the ticket runs it right there; if it panicked,
/// dropping the ticket fails its waiters instead of leaving them hanging.
struct DriverTicket {
    inner: Option<Arc<Inner>>,
    started: bool,
}

impl DriverTicket {
    fn run(mut self) {
        self.started = true;
        if let Some(inner) = self.inner.clone() {
            inner.drive();
        }
        self.inner = None;
    }
}

impl Drop for DriverTicket {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if self.started {
                inner.abandon_driver();
            } else {
                inner.drive();
            }
        }
    }
}

/// Starts the driver whose role the caller just claimed (`GroupCommit::claim_driver`).
pub(super) fn launch_driver(inner: &Arc<Inner>) {
    let ticket = DriverTicket { inner: Some(inner.clone()), started: false };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(move || ticket.run())),
        // Called outside a runtime (e.g. `roll` from plain code): do it here.
        Err(_) => ticket.run(),
    }
}

impl Log {
    /// Makes everything written so far durable (fsyncs the segments and the directory).
    ///
    /// # Errors
    /// The fsync error. Under [`FsyncPolicy::Always`] the unsynced data is then discarded,
    /// as for a failed append.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let (batch, launch) = {
            let mut st = self.inner.state.lock();
            st.check_poisoned()?;
            if !st.is_dirty() && !st.commit.is_driving() {
                return Ok(());
            }
            let batch = st.commit.join();
            (batch, st.commit.claim_driver())
        };
        if launch {
            launch_driver(&self.inner);
        }
        batch.wait().await
    }

    /// For [`FsyncPolicy::Interval`]: if something is not yet durable and the last fsync
    /// started at least the interval ago, starts one in the background
    /// (`tokio::task::spawn_blocking`, or inline outside a runtime). A failure is logged and
    /// retried at the next due time. No-op for the other policies.
    pub fn sync_if_due(&self) {
        let FsyncPolicy::Interval { ms } = self.inner.config.fsync else { return };
        let launch = {
            let mut st = self.inner.state.lock();
            let now = self.inner.clock.now().0;
            if st.poisoned.is_some() || !st.is_dirty() || now.saturating_sub(st.last_sync_ms) < ms {
                return;
            }
            st.commit.request();
            st.commit.claim_driver()
        };
        if launch {
            launch_driver(&self.inner);
        }
    }
}

impl Inner {
    /// The background fsync job: rounds until nobody wants one.
    fn drive(&self) {
        loop {
            let round = {
                let mut st = self.state.lock();
                if let Some(reason) = st.poisoned.clone() {
                    st.commit.stop(StorageError::Poisoned { reason });
                    return;
                }
                if !st.commit.begin_round() {
                    return;
                }
                st.last_sync_ms = self.clock.now().0;
                // The target is taken in the critical section that started the round: the
                // round answers exactly the appends written below it.
                let unchanged =
                    Arc::ptr_eq(&st.durable.segment, &st.active) && st.durable.pos == st.write_pos;
                Round {
                    sealed: std::mem::take(&mut st.pending_sealed),
                    target: Point { segment: st.active.clone(), pos: st.write_pos, offset: st.next_offset },
                    sync_active: !unchanged && st.write_pos > 0,
                    sync_dir: std::mem::take(&mut st.dir_dirty),
                }
            };
            let result = self.sync_round(&round);
            let mut st = self.state.lock();
            match result {
                Ok(()) => {
                    st.durable = round.target.clone();
                    let batch = st.commit.round_succeeded();
                    drop(st);
                    if self.config.fsync == FsyncPolicy::Always {
                        for s in &round.sealed {
                            s.visible_len.fetch_max(s.size.load(Ordering::Acquire), Ordering::AcqRel);
                        }
                        self.publish(&round.target.segment, round.target.pos, round.target.offset);
                    }
                    // Acknowledged only now: durable, and (under `always`) visible.
                    if let Some(batch) = batch {
                        batch.finish(None);
                    }
                }
                Err(error) => self.round_failed(&mut st, round, error),
            }
        }
    }

    fn sync_round(&self, round: &Round) -> Result<(), StorageError> {
        for s in &round.sealed {
            s.file.sync_data().map_err(|e| StorageError::io("fsync", &s.log_path, e))?;
        }
        if round.sync_active {
            let seg = &round.target.segment;
            seg.file.sync_data().map_err(|e| StorageError::io("fsync", &seg.log_path, e))?;
        }
        if round.sync_dir {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }

    fn round_failed(&self, st: &mut State, round: Round, error: StorageError) {
        if self.config.fsync == FsyncPolicy::Always {
            warn!(dir = %self.dir.display(), %error, "fsync failed; discarding what was written since the last successful fsync.");
            // Everything after the durable point goes, including appends written while the
            // round ran: they are all failed, and their offsets are reused.
            let outcome = match self.discard_locked(st) {
                Ok(()) => error,
                Err(poisoned) => poisoned,
            };
            st.commit.fail_all(outcome);
        } else {
            warn!(dir = %self.dir.display(), %error, "Background fsync failed; it will be retried.");
            let mut sealed = round.sealed;
            sealed.append(&mut st.pending_sealed);
            st.pending_sealed = sealed;
            st.dir_dirty |= round.sync_dir;
            st.commit.round_failed(error);
        }
    }

    /// Cuts the log back to the durable point (after a failed fsync under `Always`).
    fn discard_locked(&self, st: &mut State) -> Result<(), StorageError> {
        let d = st.durable.clone();
        let doomed = {
            let mut segs = self.segments.write();
            let keep = segs.iter().position(|s| s.base_offset > d.segment.base_offset).unwrap_or(segs.len());
            segs.split_off(keep)
        };
        let mut problems = Vec::new();
        for s in &doomed {
            if let Err(e) = s.remove_files(self.storage.as_ref()) {
                problems.push(e.to_string());
            }
        }
        if let Err(e) = d.segment.file.set_len(d.pos) {
            problems.push(format!(
                "could not cut {} back to {} bytes: {e}",
                d.segment.log_path.display(),
                d.pos
            ));
        }
        if !Arc::ptr_eq(&d.segment, &st.active)
            && let Err(error) = d.segment.remove_index_files(self.storage.as_ref())
        {
            // Harmless: a stale index no longer matches the file and is rebuilt when needed.
            warn!(%error, "Could not remove a stale segment index.");
        }
        d.segment.with_entries_mut(|e| e.truncate_to(d.pos));
        d.segment.size.store(d.pos, Ordering::Release);
        d.segment.end_offset.store(d.offset, Ordering::Release);
        if d.pos == 0 {
            d.segment.first_timestamp.store(0, Ordering::Release);
        }
        st.active = d.segment.clone();
        st.write_pos = d.pos;
        st.next_offset = d.offset;
        st.builder.force_next();
        st.pending_sealed.clear();
        st.dir_dirty = true;
        if problems.is_empty() {
            Ok(())
        } else {
            let reason = format!("could not discard data after a failed fsync: {}", problems.join("; "));
            warn!(%reason, "Poisoning the log.");
            st.poisoned = Some(reason.clone());
            Err(StorageError::Poisoned { reason })
        }
    }

    /// The background job was dropped without running, or panicked.
    fn abandon_driver(&self) {
        let mut st = self.state.lock();
        let reason = "the background fsync job stopped unexpectedly".to_string();
        if self.config.fsync == FsyncPolicy::Always {
            // Waiters cannot know whether their data is durable: make the log say so.
            st.poisoned = Some(reason.clone());
        }
        st.commit.stop(StorageError::Poisoned { reason });
    }
}
