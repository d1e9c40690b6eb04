//! The connection to RabbitMQ, shared by the publisher and every subscription, and reopened
//! on demand.
//!
//! One AMQP connection carries one channel per subscription plus one publisher-confirm
//! channel. Nothing reconnects in the background: when the connection has dropped (the
//! broker restarted, the network failed) the call that notices fails with a retryable error
//! and the next call that needs the connection opens a new one. Subscriptions retry with
//! backoff through the same path (see `subscribe.rs`). Error messages name the endpoint
//! (`host:port`), never the credentials.
//!
//! Nothing waits for RabbitMQ forever. `lapin` resolves a request only when the broker
//! answers or its I/O loop reports the connection failed; a broker that stops answering on a
//! live socket, or a request queued just as the I/O loop shut down, would leave the caller
//! waiting for good. So every exchange with the broker (opening a connection or channel, a
//! declare, a publish and its confirm, an ack or nack, closing) is bounded by
//! [`CONNECT_TIMEOUT`] or [`RPC_TIMEOUT`] and fails with a retryable error when it runs out.
//! A timeout on the shared connection or publish channel also discards it, so the next call
//! opens a new one instead of waiting on the same dead one. Closing is bounded by
//! [`CLOSE_TIMEOUT`]: the connection is dropped when RabbitMQ does not confirm the close.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use switchboard_core::TopicName;
use switchboard_core::contract::{BusError, Resource};
use tokio::sync::{Mutex, watch};

use crate::offsets::Commits;

/// The backend's name in errors and [`Backend::name`](switchboard_core::backend::Backend::name).
pub(crate) const BACKEND: &str = "amqp";

/// How long opening a connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long any one request to RabbitMQ (a channel open, a declare, a publish with its
/// confirm, an ack) may wait for its answer before it fails with a retryable error.
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing a channel or the connection may wait for RabbitMQ's `close-ok`.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the backend handle, its publishes and its subscriptions.
pub(crate) struct Shared {
    uri: AMQPUri,
    endpoint: String,
    conn: Mutex<Option<Arc<Connection>>>,
    publish_channel: Mutex<Option<Channel>>,
    /// Topics whose exchange and stream were declared by this process.
    pub(crate) ensured: parking_lot::Mutex<HashSet<TopicName>>,
    /// Deliveries received from RabbitMQ by this process and not yet settled, per queue
    /// (for `stats`): buffered ones and those handed out.
    in_flight: parking_lot::Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Commit points of the open stream subscriptions, written once more on close.
    commits: parking_lot::Mutex<Vec<Weak<Commits>>>,
    /// Serializes reading offset stores (see `offsets.rs`).
    pub(crate) offset_reads: Mutex<()>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    /// Parses `url` and opens the first connection.
    pub(crate) async fn connect(url: &str) -> Result<Arc<Shared>, BusError> {
        let uri = AMQPUri::from_str(url)
            .map_err(|reason| BusError::InvalidUrl { url: redact(url), reason: redact(&reason) })?;
        let endpoint = format!("{}:{}", uri.authority.host, uri.authority.port);
        let shared = Arc::new(Shared {
            uri,
            endpoint,
            conn: Mutex::new(None),
            publish_channel: Mutex::new(None),
            ensured: parking_lot::Mutex::new(HashSet::new()),
            in_flight: parking_lot::Mutex::new(HashMap::new()),
            commits: parking_lot::Mutex::new(Vec::new()),
            offset_reads: Mutex::new(()),
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
        });
        shared.connection().await?;
        Ok(shared)
    }

    /// `Err(Closed)` once [`Shared::close`] ran.
    pub(crate) fn check_open(&self) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) { Err(BusError::Closed) } else { Ok(()) }
    }

    /// The in-flight counter of `queue`.
    pub(crate) fn in_flight(&self, queue: &str) -> Arc<AtomicU64> {
        self.in_flight.lock().entry(queue.to_owned()).or_default().clone()
    }

    /// Registers the commit point of a stream subscription, for [`Shared::close`].
    pub(crate) fn register(&self, commits: &Arc<Commits>) {
        let mut all = self.commits.lock();
        all.retain(|c| c.strong_count() > 0);
        all.push(Arc::downgrade(commits));
    }

    /// Fires when the backend is closed.
    pub(crate) fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The open connection, reconnecting when the last one dropped.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        self.check_open()?;
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        if let Some(old) = slot.take() {
            tracing::info!(endpoint = %self.endpoint, "AMQP connection lost; reconnecting");
            drop(old);
        }
        let props = ConnectionProperties::default().with_connection_name("switchboard".into());
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(self.uri.clone(), props))
            .await
            .map_err(|_| self.unreachable(std::io::Error::from(std::io::ErrorKind::TimedOut)))?;
        let conn = Arc::new(opened.map_err(|e| match e.kind() {
            ErrorKind::ProtocolError(_) => lapin_error(e),
            _ => self.unreachable(e),
        })?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A new channel on the current connection.
    pub(crate) async fn channel(&self) -> Result<Channel, BusError> {
        let conn = self.connection().await?;
        let opened = bounded("opening a channel", conn.create_channel()).await;
        if let Err(e) = &opened
            && is_timeout(e)
        {
            self.discard(&conn).await;
        }
        opened
    }

    /// Forgets `conn` (when it stopped answering) so the next call opens a new connection.
    async fn discard(&self, conn: &Arc<Connection>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            tracing::warn!(endpoint = %self.endpoint, "RabbitMQ stopped answering; dropping the connection");
            slot.take();
        }
    }

    /// The publisher-confirm channel, opened (again) when needed.
    pub(crate) async fn publish_channel(&self) -> Result<Channel, BusError> {
        let mut slot = self.publish_channel.lock().await;
        if let Some(ch) = slot.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let ch = self.channel().await?;
        if let Err(e) =
            bounded("enabling publisher confirms", ch.confirm_select(ConfirmSelectOptions::default())).await
        {
            close_channel(&ch).await;
            return Err(e);
        }
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Forgets the publish channel `ch` after a request on it timed out, so the next publish
    /// opens a new one; it is closed in the background (bounded), not waited for.
    pub(crate) async fn discard_publish_channel(&self, ch: &Channel) {
        let mut slot = self.publish_channel.lock().await;
        if slot.as_ref().is_some_and(|c| c.id() == ch.id()) {
            slot.take();
        }
        drop(slot);
        let ch = ch.clone();
        tokio::spawn(async move { close_channel(&ch).await });
    }

    /// Waits for every outstanding confirm on the publish channel.
    pub(crate) async fn flush(&self) -> Result<(), BusError> {
        let ch = self.publish_channel.lock().await.clone();
        if let Some(ch) = ch
            && ch.status().connected()
        {
            let flushed = bounded("waiting for publisher confirms", ch.wait_for_confirms()).await;
            if let Err(e) = &flushed
                && is_timeout(e)
            {
                self.discard_publish_channel(&ch).await;
            }
            flushed?;
        }
        Ok(())
    }

    /// Writes the commit points of open stream subscriptions, ends subscriptions and closes
    /// the connection.
    pub(crate) async fn close(&self) -> Result<(), BusError> {
        let mut committed = Ok(());
        if self.check_open().is_ok() {
            let open: Vec<Arc<Commits>> = self.commits.lock().drain(..).filter_map(|c| c.upgrade()).collect();
            for c in open {
                if let Err(e) = c.finish(self).await {
                    tracing::warn!(error = %e, "committing a stream subscription's offset on close failed");
                    committed = committed.and(Err(e));
                }
            }
        }
        let flushed = self.flush().await.and(committed);
        self.closed.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
        // Close the publish channel first and wait (bounded) for it, rather than dropping it
        // and racing its close against the connection's.
        if let Some(ch) = self.publish_channel.lock().await.take() {
            close_channel(&ch).await;
        }
        if let Some(conn) = self.conn.lock().await.take()
            && conn.status().connected()
        {
            match tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "switchboard backend closed".into()))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "closing the AMQP connection failed"),
                Err(_) => tracing::warn!(endpoint = %self.endpoint,
                    "RabbitMQ did not confirm closing the connection in {CLOSE_TIMEOUT:?}; dropping it"),
            }
        }
        flushed
    }

    fn unreachable(&self, e: impl std::error::Error + Send + Sync + 'static) -> BusError {
        BusError::Unreachable { backend: BACKEND, endpoint: self.endpoint.clone(), source: Box::new(e) }
    }
}

/// Runs one request to RabbitMQ, failing with a retryable error when it gets no answer within
/// [`RPC_TIMEOUT`] (see the module docs).
pub(crate) async fn bounded<T>(
    what: &str,
    request: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(RPC_TIMEOUT, request).await {
        Ok(answer) => answer.map_err(lapin_error),
        Err(_) => Err(timed_out(what)),
    }
}

/// The retryable error of a request RabbitMQ did not answer in time.
pub(crate) fn timed_out(what: &str) -> BusError {
    BusError::Backend {
        backend: BACKEND,
        message: format!("{TIMED_OUT} ({what}, {RPC_TIMEOUT:?})"),
        retryable: true,
        source: None,
    }
}

const TIMED_OUT: &str = "RabbitMQ did not answer in time";

/// Whether `e` is a [`timed_out`] error.
pub(crate) fn is_timeout(e: &BusError) -> bool {
    matches!(e, BusError::Backend { message, .. } if message.starts_with(TIMED_OUT))
}

/// Closes a channel, waiting at most [`CLOSE_TIMEOUT`] for RabbitMQ; failures are ignored (a
/// channel that cannot be closed is gone with its connection).
pub(crate) async fn close_channel(ch: &Channel) {
    if ch.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, "ok".into())).await;
    }
}

/// Settles a delivery on its channel (ack or nack), waiting at most [`RPC_TIMEOUT`]. `Ok(false)`
/// when the channel is gone; a timeout is a retryable error.
pub(crate) async fn settle_bounded(
    settle: impl Future<Output = lapin::Result<bool>>,
) -> Result<bool, BusError> {
    bounded("settling a delivery", settle).await
}

/// Maps a client error: connection trouble is retryable, a refusal by the broker is not.
///
/// `NOT_FOUND` and `PRECONDITION_FAILED` become [`BusError::NotFound`] and
/// [`BusError::Conflict`] about the queue or exchange RabbitMQ names in its reply (a
/// [`Resource::Native`]); callers that know the topic or subscription behind it say so
/// instead. A reply that names no queue or exchange has no resource to report and stays a
/// non-retryable [`BusError::Backend`].
pub(crate) fn lapin_error(e: lapin::Error) -> BusError {
    let retryable = match e.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                if let Some(resource) = named_object(amqp.get_message().as_str()) {
                    return BusError::NotFound { resource };
                }
                false
            }
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                if let Some(resource) = named_object(amqp.get_message().as_str()) {
                    let reason = format!("RabbitMQ refused: {}", amqp.get_message());
                    return BusError::Conflict { resource, reason };
                }
                false
            }
            AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => true,
            AMQPErrorKind::Soft(_) => false,
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED | AMQPHardError::INTERNALERROR) => true,
            AMQPErrorKind::Hard(_) => false,
        },
        ErrorKind::ChannelsLimitReached | ErrorKind::InvalidProtocolVersion(_) => false,
        ErrorKind::AuthProviderError(_) | ErrorKind::NoDefaultRuntime => false,
        _ => true,
    };
    BusError::backend(BACKEND, retryable, e)
}

/// The queue or exchange a RabbitMQ reply text names: it writes them as
/// `<kind> '<name>' in vhost '<vhost>'` (`NOT_FOUND - no queue 'sb.q.…' in vhost '/'`,
/// `PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'sb.q.…' in vhost '/': …`).
fn named_object(reply: &str) -> Option<Resource> {
    let head = &reply[..reply.find("' in vhost '")?];
    let open = head.rfind(" '")?;
    let kind = match head[..open].rsplit(' ').next()? {
        "queue" => "queue",
        "exchange" => "exchange",
        _ => return None,
    };
    Some(Resource::Native { kind, name: head[open + 2..].to_owned() })
}

/// `url` with any `user:password@` replaced by `***@`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(redact("amqp://guest:secret@host:5672/%2f"), "amqp://***@host:5672/%2f");
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn replies_name_their_queue_or_exchange() {
        let native = |kind, name: &str| Some(Resource::Native { kind, name: name.to_owned() });
        assert_eq!(
            named_object("NOT_FOUND - no queue 'sb.q.1.t.s' in vhost '/'"),
            native("queue", "sb.q.1.t.s")
        );
        assert_eq!(
            named_object("NOT_FOUND - no exchange 'sb.t.a' in vhost 'v'"),
            native("exchange", "sb.t.a")
        );
        assert_eq!(
            named_object(
                "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'sb.q.1.t.w' in \
                 vhost '/': received the value '6' of type 'signedint' but current is none"
            ),
            native("queue", "sb.q.1.t.w")
        );
        assert_eq!(named_object("PRECONDITION_FAILED - unknown delivery tag 5"), None);
    }
}
