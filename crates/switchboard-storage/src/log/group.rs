//! The synchronisation core of group commit, apart from any file: who drives the fsync
//! rounds, which waiters a round answers, and how its outcome reaches them.
//!
//! It is kept free of I/O and of locks of its own so that it can be checked under a
//! concurrency model checker (the tests below run it under `shuttle`), while the log keeps
//! it inside its append lock ([`State`](super::State)) and does the fsyncs.
//!
//! The protocol, as the log follows it (every call under the append lock):
//!
//! 1. A writer writes its batch, then [`join`](GroupCommit::join)s the *filling* batch of
//!    waiters: the one the next round will answer, which covers everything written since the
//!    last round started. Whoever then wins [`claim_driver`](GroupCommit::claim_driver)
//!    (only when none runs) starts the driver; everyone waits on their batch.
//! 2. The driver loops: [`begin_round`](GroupCommit::begin_round) swaps the filling batch out
//!    as the round's own *in the same critical section* in which the driver notes the write
//!    position the round will fsync to. So a round answers exactly the writers whose bytes
//!    lie below its target; later writers land in the next batch.
//! 3. The fsync runs outside the lock. On success the driver takes the round's batch back
//!    ([`round_succeeded`](GroupCommit::round_succeeded)) and finishes it *after* the fsync
//!    (and after publishing to readers). On failure under `always`, the log discards
//!    everything since the last good fsync, so [`fail_all`](GroupCommit::fail_all) fails the
//!    round's batch *and* the filling one: none of their bytes survive.
//! 4. When `begin_round` finds no request, the driver role is released in that same critical
//!    section, so a writer that joins afterwards claims a new driver: no request is stranded.

use std::pin::pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use crate::error::StorageError;

/// The waiters of one fsync round (appends and `sync` calls), and its outcome once known.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// `None` inside: success. Set once.
    outcome: OnceLock<Option<StorageError>>,
    notify: Notify,
}

impl Batch {
    /// Records the outcome and wakes every waiter. Only the first outcome counts.
    pub(super) fn finish(&self, outcome: Option<StorageError>) {
        let _ = self.outcome.set(outcome);
        self.notify.notify_waiters();
    }

    fn outcome(&self) -> Option<Result<(), StorageError>> {
        self.outcome.get().map(|o| match o {
            None => Ok(()),
            Some(e) => Err(e.duplicate()),
        })
    }

    /// Waits for the outcome.
    pub(super) async fn wait(&self) -> Result<(), StorageError> {
        loop {
            // Register before looking, so a `finish` between the look and the await still
            // wakes us (`notify_waiters` only wakes registered waiters).
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if let Some(result) = self.outcome() {
                return result;
            }
            notified.await;
        }
    }
}

/// The state of group commit; lives under the log's append lock.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    /// Someone wants another round: data was written, a segment sealed, `sync` called.
    requested: bool,
    /// A driver holds the role (from its claim until `begin_round` releases it).
    driving: bool,
    /// Waiters for everything written since the last round started.
    filling: Arc<Batch>,
    /// The batch of the round in progress, so that an abandoned driver can fail it.
    inflight: Option<Arc<Batch>>,
}

impl GroupCommit {
    /// Asks for a round and returns the batch whose outcome says whether what the caller
    /// wrote before this call is durable.
    pub(super) fn join(&mut self) -> Arc<Batch> {
        self.requested = true;
        self.filling.clone()
    }

    /// Asks for a round that nobody waits for (a sealed segment, an interval fsync, an
    /// unsynced append riding along).
    pub(super) fn request(&mut self) {
        self.requested = true;
    }

    /// Whether a driver holds the role.
    pub(super) fn is_driving(&self) -> bool {
        self.driving
    }

    /// Claims the driver role if a round is wanted and no driver runs. On `true` the caller
    /// must start the driver (exactly one runs at a time).
    #[must_use]
    pub(super) fn claim_driver(&mut self) -> bool {
        if self.requested && !self.driving {
            self.driving = true;
            true
        } else {
            false
        }
    }

    /// The driver, at the top of its loop. `true`: a round starts and will answer everyone
    /// who joined so far; the caller must note what it will fsync in this same critical
    /// section. `false`: no round is wanted; the driver role is released and the driver
    /// must stop.
    #[must_use]
    pub(super) fn begin_round(&mut self) -> bool {
        if !self.requested {
            self.driving = false;
            return false;
        }
        self.requested = false;
        self.inflight = Some(std::mem::take(&mut self.filling));
        true
    }

    /// The round's fsync succeeded: returns its batch, which the caller finishes with
    /// success once readers can see the data.
    #[must_use = "the round's waiters wait until their batch is finished"]
    pub(super) fn round_succeeded(&mut self) -> Option<Arc<Batch>> {
        self.inflight.take()
    }

    /// The round failed but what it covered is kept for a later round (policies other than
    /// `always`): fails only the round's own waiters.
    pub(super) fn round_failed(&mut self, error: StorageError) {
        if let Some(batch) = self.inflight.take() {
            batch.finish(Some(error));
        }
    }

    /// Everything written since the last good fsync was discarded: fails the round's waiters
    /// and those who joined since, and drops the requests (nothing is left to fsync).
    pub(super) fn fail_all(&mut self, error: StorageError) {
        self.requested = false;
        let filling = std::mem::take(&mut self.filling);
        if let Some(batch) = self.inflight.take() {
            batch.finish(Some(error.duplicate()));
        }
        filling.finish(Some(error));
    }

    /// The driver stops for good (the log is poisoned, or the job died): every waiter,
    /// in the round or joined since, gets `error`, and the role is released.
    pub(super) fn stop(&mut self, error: StorageError) {
        self.driving = false;
        self.fail_all(error);
    }
}

#[cfg(test)]
mod tests {
    //! The protocol under `shuttle`, which runs the threads below under many schedules
    //! (randomly, and with PCT, which favours the rare preemptions that break protocols).
    //! A model log (a vector of writer ids and a durable length) stands for the files; the
    //! driver is the log's loop in miniature. Each writer checks what it was told against
    //! the model: `Ok` only if its write lies in the durable prefix, an error only if it
    //! was discarded. A waiter nobody wakes leaves shuttle with every thread blocked, which
    //! it reports as a deadlock.

    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use shuttle::sync::Mutex;
    use shuttle::thread;

    use super::*;

    struct ModelLog {
        commit: GroupCommit,
        /// Who wrote each position.
        written: Vec<usize>,
        /// Positions below this are durable.
        durable: usize,
        /// How many rounds have started, to fail chosen ones.
        rounds: usize,
        drivers: Vec<thread::JoinHandle<()>>,
    }

    struct Model {
        log: Mutex<ModelLog>,
        /// Round numbers (from 0) whose fsync fails.
        failing: Vec<usize>,
    }

    fn error() -> StorageError {
        StorageError::io("fsync", std::path::Path::new("/model"), std::io::Error::other("injected"))
    }

    fn drive(model: &Model) {
        loop {
            let (target, round) = {
                let mut log = model.log.lock().unwrap();
                if !log.commit.begin_round() {
                    return;
                }
                log.rounds += 1;
                (log.written.len(), log.rounds - 1)
            };
            // The fsync, outside the lock: writers keep writing meanwhile.
            thread::yield_now();
            let failed = model.failing.contains(&round);
            let mut log = model.log.lock().unwrap();
            if failed {
                let durable = log.durable;
                log.written.truncate(durable);
                log.commit.fail_all(error());
            } else {
                log.durable = target;
                let done = log.commit.round_succeeded();
                drop(log);
                thread::yield_now();
                done.unwrap().finish(None);
            }
        }
    }

    fn launch(model: &Arc<Model>, log: &mut ModelLog) {
        let m = model.clone();
        log.drivers.push(thread::spawn(move || drive(&m)));
    }

    /// A writer: writes (or, for `sync`, only asks) and waits, then checks the answer.
    fn writer(model: &Arc<Model>, me: usize, writes: bool) {
        let (batch, at, len) = {
            let mut log = model.log.lock().unwrap();
            let at = writes.then(|| {
                log.written.push(me);
                log.written.len() - 1
            });
            let batch = log.commit.join();
            if log.commit.claim_driver() {
                launch(model, &mut log);
            }
            (batch, at, log.written.len())
        };
        let result = shuttle::future::block_on(batch.wait());
        let log = model.log.lock().unwrap();
        let mine = at.is_none_or(|at| log.written.get(at) == Some(&me));
        match result {
            // Durable lengths only grow, so everything below `len` must be durable now.
            Ok(()) => assert!(
                mine && log.durable >= len,
                "writer {me} was acknowledged before an fsync covered its {len} positions"
            ),
            Err(_) => assert!(at.is_none() || !mine, "writer {me} was failed but its write was kept"),
        }
    }

    fn scenario(failing: Vec<usize>) -> impl Fn() + Send + Sync + 'static {
        move || {
            let model = Arc::new(Model {
                log: Mutex::new(ModelLog {
                    commit: GroupCommit::default(),
                    written: Vec::new(),
                    durable: 0,
                    rounds: 0,
                    drivers: Vec::new(),
                }),
                failing: failing.clone(),
            });
            // Three appenders and one `sync` caller, racing each other and the driver.
            let threads: Vec<_> = (0..4)
                .map(|me| {
                    let m = model.clone();
                    thread::spawn(move || writer(&m, me, me != 3))
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            loop {
                let driver = model.log.lock().unwrap().drivers.pop();
                let Some(driver) = driver else { break };
                driver.join().unwrap();
            }
            let log = model.log.lock().unwrap();
            assert!(!log.commit.is_driving(), "the driver role was left held");
            assert_eq!(log.durable, log.written.len(), "something written was neither fsynced nor discarded");
        }
    }

    const ITERATIONS: usize = 3_000;

    #[test]
    fn group_commit_protocol_random_schedules() {
        shuttle::check_random(scenario(vec![]), ITERATIONS);
        shuttle::check_random(scenario(vec![0]), ITERATIONS);
        shuttle::check_random(scenario(vec![1]), ITERATIONS);
    }

    #[test]
    fn group_commit_protocol_pct_schedules() {
        shuttle::check_pct(scenario(vec![]), ITERATIONS, 3);
        shuttle::check_pct(scenario(vec![0]), ITERATIONS, 3);
        shuttle::check_pct(scenario(vec![1]), ITERATIONS, 3);
    }
}
