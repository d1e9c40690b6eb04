//! Catch-up subscriptions: read from a checkpoint, then wait for more with the same query.
//!
//! There is no separate live channel to switch to, so there is no switch to get wrong:
//! when a read comes back empty the subscription waits for the feed to grow (a wake-up
//! from this process's appends, PostgreSQL's `NOTIFY`, or the poll) and reads again after
//! the last event it handed out. The feed's positions never change once visible, so each
//! event comes exactly once, in order.

use std::collections::VecDeque;

use tokio::sync::watch;

use super::{
    Direction, EventStore, EventStoreDatabase, EventStoreError, Position, RecordedEvent, StreamName,
};

/// How many events a subscription reads at a time.
const BATCH: usize = 512;

/// A catch-up subscription to the feed or to one stream.
pub struct CatchUp<DB: EventStoreDatabase> {
    store: EventStore<DB>,
    stream: Option<StreamName>,
    /// The last position (feed) or version (stream) handed out.
    after: u64,
    buffer: VecDeque<RecordedEvent>,
    changes: watch::Receiver<u64>,
    live: bool,
}

impl<DB: EventStoreDatabase> std::fmt::Debug for CatchUp<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUp")
            .field("stream", &self.stream)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl<DB: EventStoreDatabase> CatchUp<DB> {
    pub(crate) fn new(store: EventStore<DB>, stream: Option<StreamName>, after: u64) -> CatchUp<DB> {
        let changes = store.feed_changes();
        CatchUp { store, stream, after, buffer: VecDeque::new(), changes, live: false }
    }

    /// The next event, waiting for one when the subscription has caught up.
    ///
    /// # Errors
    /// The database fails (the subscription stays where it was: call again to retry), or
    /// an event cannot be upcast.
    pub async fn next(&mut self) -> Result<RecordedEvent, EventStoreError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = match (&self.stream, event.position) {
                    (None, Some(position)) => position.0,
                    _ => event.version,
                };
                return Ok(event);
            }
            // Seen before the read: growth during the read wakes the wait below at once.
            self.changes.borrow_and_update();
            let batch = self.read().await?;
            if batch.is_empty() {
                self.live = true;
                tokio::select! {
                    _ = self.changes.changed() => {}
                    () = tokio::time::sleep(self.store.poll_interval()) => {}
                }
            } else {
                self.buffer.extend(batch);
            }
        }
    }

    async fn read(&self) -> Result<Vec<RecordedEvent>, EventStoreError> {
        match &self.stream {
            None => self.store.read_all(Position(self.after), BATCH).await,
            Some(stream) => self.store.read_stream(stream, Direction::Forward, self.after + 1, BATCH).await,
        }
    }

    /// The position (feed) or version (stream) of the last event handed out: where to
    /// start again.
    pub fn checkpoint(&self) -> u64 {
        self.after
    }

    /// Whether the subscription has read everything that was there, and is waiting for
    /// new events.
    pub fn is_live(&self) -> bool {
        self.live
    }
}
