//! The event logs the writer and reader processes leave behind, one JSON object per line.
//!
//! A worker writes its events in the order they happened in that process, which is all the
//! checker needs: whether a delivery came after its ack's confirmation is decided inside one
//! reader process, on one log.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One thing a worker saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The writer got a receipt for a publish.
    Acked {
        /// The message id (see [`MessageId`]).
        id: String,
        /// Where the server stored it.
        partition: u32,
        /// Where the server stored it.
        offset: u64,
        /// Attempts it took (more than one: earlier attempts had no answer).
        attempts: u32,
        /// The server answered that the id was already stored (an earlier attempt landed).
        duplicate: bool,
        /// When, ms since the epoch.
        t_ms: u64,
    },
    /// The reader received a message on a subscription.
    Delivered {
        /// The subscription.
        sub: String,
        /// The message id.
        id: String,
        /// Where it is stored.
        partition: u32,
        /// Where it is stored.
        offset: u64,
        /// The server's attempt number.
        attempt: u32,
    },
    /// The server confirmed an ack (queue subscriptions): the message is done for good.
    AckConfirmed {
        /// The subscription.
        sub: String,
        /// The message id.
        id: String,
    },
    /// The server confirmed a commit (stream subscriptions): every offset below `offset` in
    /// `partition` is done for good.
    CommitConfirmed {
        /// The subscription.
        sub: String,
        /// The partition.
        partition: u32,
        /// The next offset to read.
        offset: u64,
    },
    /// A worker lost its connection or stream and opened it again.
    Reconnected {
        /// The subscription, or `publish` for the writer.
        what: String,
        /// Why the old one ended.
        error: String,
    },
    /// A worker is done; its last event.
    Finished {
        /// Publish attempts that failed (writer) or settles that failed (reader).
        failures: u64,
        /// For the reader: whether every subscription's backlog reached zero.
        drained: bool,
        /// For the reader: backlog per subscription at the end.
        backlogs: Vec<(String, u64)>,
    },
}

/// The id of a campaign message: `k<key>-<seq>`, so a delivery names its key and place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MessageId {
    pub(crate) key: u32,
    pub(crate) seq: u64,
}

impl MessageId {
    pub(crate) fn render(self) -> String {
        format!("k{}-{}", self.key, self.seq)
    }

    pub(crate) fn parse(id: &str) -> Option<MessageId> {
        let (key, seq) = id.strip_prefix('k')?.split_once('-')?;
        Some(MessageId { key: key.parse().ok()?, seq: seq.parse().ok()? })
    }
}

/// Writes events from any task of a worker, in the order they are sent, to a file.
#[derive(Clone)]
pub(crate) struct EventSink(mpsc::UnboundedSender<Event>);

impl EventSink {
    /// Starts the writing thread; join the handle after dropping every sink to flush.
    pub(crate) fn to_file(
        path: &Path,
    ) -> anyhow::Result<(EventSink, std::thread::JoinHandle<anyhow::Result<()>>)> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let handle = std::thread::spawn(move || {
            let mut out = BufWriter::new(file);
            while let Some(event) = rx.blocking_recv() {
                serde_json::to_writer(&mut out, &event)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        });
        Ok((EventSink(tx), handle))
    }

    /// Records an event (lost only if the writing thread died, which its join reports).
    pub(crate) fn send(&self, event: Event) {
        let _ = self.0.send(event);
    }
}

/// Reads an event log.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(n, line)| {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&line).with_context(|| format!("{}:{}: bad event", path.display(), n + 1))
        })
        .collect()
}
