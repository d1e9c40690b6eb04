//! One open `Consume` stream, as the deliveries it handed out see it: where to send acks,
//! nacks, extensions, commits and credits, and where their answers arrive.
//!
//! Requests carry an id; the server answers each with a `settled` response echoing it, which
//! the stream's reader hands to the waiting settle through a map of one-shot channels. When
//! the stream breaks the session is killed: the map is emptied (every waiter gets
//! [`BusError::LeaseLost`]) and refuses new entries, so a delivery from a broken stream can
//! never be settled by a later one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use switchboard_core::contract::{BusError, LeaseLostCause, Mode};
use switchboard_proto::switchboard::v1 as api;
use tokio::sync::{mpsc, oneshot};

use crate::error::from_outcome;
use api::consume_request::Request as In;
use api::consume_response::{Outcome, Settled};
use switchboard_core::backend::CommitPoint;

/// What exists only while the stream is open.
struct Open {
    /// Requests to the server. Dropping it (with the session's death) ends the request half of
    /// the call, which is what lets the HTTP/2 stream close: a consume stream kept open by a
    /// stale delivery would hold a server's graceful shutdown back.
    outbound: mpsc::UnboundedSender<api::ConsumeRequest>,
    /// Settles waiting for their answer, by request id.
    waiters: HashMap<u64, oneshot::Sender<Vec<Outcome>>>,
}

/// The shared half of a consume stream.
pub(crate) struct Session {
    pub(crate) mode: Mode,
    endpoint: String,
    /// `None` once the stream is gone.
    open: Mutex<Option<Open>>,
    next_id: AtomicU64,
    /// Credits earned by settled deliveries and not yet granted.
    owed: AtomicU32,
    /// Grant credits in batches of this many (fewer frames at high rates).
    credit_batch: u32,
    /// Stream mode: what may be committed, per partition. A nacked or dropped delivery stays
    /// unacked and holds the commit back; it is read again when the subscription is next
    /// opened (the server has no per-message redelivery for streams).
    offsets: Mutex<HashMap<u32, CommitPoint>>,
}

fn lost() -> BusError {
    BusError::lease_lost(
        LeaseLostCause::ConnectionLost,
        "the server restarted or the connection dropped; the message will be delivered again",
    )
}

impl Session {
    /// A session sending on `outbound`; `prefetch` sets the credit batch.
    pub(crate) fn new(
        mode: Mode,
        endpoint: String,
        outbound: mpsc::UnboundedSender<api::ConsumeRequest>,
        prefetch: u32,
    ) -> Session {
        Session {
            mode,
            endpoint,
            open: Mutex::new(Some(Open { outbound, waiters: HashMap::new() })),
            // 0 is the `open` request.
            next_id: AtomicU64::new(1),
            owed: AtomicU32::new(0),
            credit_batch: (prefetch / 8).max(1),
            offsets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the stream is still open.
    pub(crate) fn alive(&self) -> bool {
        self.open.lock().is_some()
    }

    /// The stream is gone: fails every waiting settle and refuses new ones.
    pub(crate) fn kill(&self) {
        // Dropping the senders wakes the waiters with an error.
        drop(self.open.lock().take());
    }

    /// Sends `request`; returns where its answer will arrive.
    fn start(&self, request: In) -> Result<oneshot::Receiver<Vec<Outcome>>, BusError> {
        let mut open = self.open.lock();
        let Some(open) = open.as_mut() else { return Err(lost()) };
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if open.outbound.send(api::ConsumeRequest { request_id, request: Some(request) }).is_err() {
            return Err(lost());
        }
        open.waiters.insert(request_id, tx);
        Ok(rx)
    }

    /// Waits for the answer to a started request: the outcome of its one item.
    async fn finish(&self, rx: oneshot::Receiver<Vec<Outcome>>) -> Result<Outcome, BusError> {
        let outcome = rx.await.map_err(|_| lost())?.into_iter().next();
        let Some(outcome) = outcome else {
            return Err(BusError::Backend {
                backend: crate::error::BACKEND,
                message: "the server answered a settle without an outcome".into(),
                retryable: true,
                source: None,
            });
        };
        match outcome.error {
            Some(e) => Err(from_outcome(e, &self.endpoint)),
            None => Ok(outcome),
        }
    }

    /// Sends `request` and waits for its outcome.
    ///
    /// # Errors
    /// [`BusError::LeaseLost`] when the stream broke or the server no longer knows the
    /// delivery; otherwise the item's error.
    pub(crate) async fn request(&self, request: In) -> Result<Outcome, BusError> {
        let rx = self.start(request)?;
        self.finish(rx).await
    }

    /// Queue mode: sends an ack or nack, gives the delivery's credit back (after the request,
    /// so the server sees the settle before it may deliver more) and waits for the outcome.
    ///
    /// # Errors
    /// As [`Session::request`].
    pub(crate) async fn settle(&self, request: In) -> Result<(), BusError> {
        let started = self.start(request);
        self.credit_back();
        self.finish(started?).await.map(drop)
    }

    /// Sends `request` without waiting for its answer (which is then ignored).
    pub(crate) fn send(&self, request: In) {
        if let Some(open) = self.open.lock().as_ref() {
            let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let _ = open.outbound.send(api::ConsumeRequest { request_id, request: Some(request) });
        }
    }

    /// Hands an answer to its waiter (answers nobody waits for are dropped).
    pub(crate) fn answer(&self, settled: Settled) {
        let waiter = self.open.lock().as_mut().and_then(|o| o.waiters.remove(&settled.request_id));
        if let Some(tx) = waiter {
            let _ = tx.send(settled.outcomes);
        }
    }

    /// A delivery of this stream is settled: it gives its credit back, so the server may send
    /// another. Unsettled deliveries keep theirs, which is the back-pressure.
    pub(crate) fn credit_back(&self) {
        if !self.alive() {
            return;
        }
        let owed = self.owed.fetch_add(1, Ordering::AcqRel) + 1;
        if owed >= self.credit_batch {
            let credits = self.owed.swap(0, Ordering::AcqRel);
            if credits > 0 {
                self.send(In::Credit(api::consume_request::Credit { credits }));
            }
        }
    }

    /// Stream mode: records a delivery, which holds the commit point until it is acked.
    pub(crate) fn delivered(&self, partition: u32, offset: u64) {
        self.offsets.lock().entry(partition).or_default().delivered(offset);
    }

    /// Stream mode: acks `offset`, committing the highest offset below which everything is
    /// acked. An ack that does not move the commit point returns at once.
    ///
    /// # Errors
    /// As [`Session::request`].
    pub(crate) async fn ack_offset(&self, partition: u32, offset: u64) -> Result<(), BusError> {
        // Commits are sent under the lock, so they reach the server in increasing order.
        let rx = {
            let mut offsets = self.offsets.lock();
            let Some(next) = offsets.entry(partition).or_default().acked(offset) else {
                return if self.alive() { Ok(()) } else { Err(lost()) };
            };
            let commit = api::consume_request::Commit {
                offsets: vec![api::PartitionOffset { partition, offset: next }],
            };
            self.start(In::Commit(commit))?
        };
        self.finish(rx).await.map(drop)
    }
}
