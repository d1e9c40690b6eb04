//! Subscriptions: a task per subscription keeps one `Consume` stream open, reopening it
//! after it breaks, and hands deliveries to [`RemoteSource::next`] through a channel.
//!
//! ## Reconnecting
//!
//! The server keeps a subscription's state, so a broken stream loses nothing: leases of
//! unsettled queue deliveries run out and their messages are delivered again, and a stream
//! subscription resumes from its committed offsets. The task therefore treats any failure
//! that may heal (the server restarting or shutting down, a dropped connection) by opening
//! the stream again with jittered exponential backoff (`Reconnect`: 100 ms doubling to
//! [`MAX_BACKOFF`]), and
//! `next` simply waits meanwhile. Only errors that will not heal (the subscription was
//! deleted, the token is refused) reach `next`, once, after which the subscription ends.
//!
//! Deliveries of a broken stream cannot be settled (the server forgot their leases):
//! settling one returns [`BusError::LeaseLost`], and those still waiting in the channel are
//! dropped rather than handed out.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::backend::DeliverySource;
use switchboard_core::contract::{BusError, Delivery, DeliveryInfo, Mode};
use switchboard_core::{SubscriptionName, TopicName};
use switchboard_policy::Reconnect;
use switchboard_proto::switchboard::v1 as api;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use crate::connection::{Shared, stopped};
use crate::convert;
use crate::error::{from_status, heals};
use crate::session::Session;
use crate::settle::RemoteSettle;
use api::consume_request::Request as In;
use api::consume_response::Response as Out;

/// The longest wait between attempts to reopen a broken stream. The waits are jittered
/// ([`Reconnect`]): after a server restart every subscription of every client reconnects,
/// and without jitter they would all do it in the same instants.
const MAX_BACKOFF: Duration = Duration::from_millis(1500);
/// How long opening a stream may take before it counts as broken.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a subscription's task needs.
pub(crate) struct Consumer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) topic: TopicName,
    pub(crate) subscription: SubscriptionName,
    pub(crate) mode: Mode,
    pub(crate) prefetch: u32,
}

/// A stream that is open, and the signal that the server is shutting down, taken before the
/// stream was opened so a shutdown in between is not missed.
struct Stream {
    session: Arc<Session>,
    inbound: Streaming<api::ConsumeResponse>,
    shutdowns: watch::Receiver<u64>,
}

/// A delivery waiting in the channel, turned into a [`Delivery`] only when handed out.
struct Pending {
    message: switchboard_core::Message,
    info: DeliveryInfo,
    settle: RemoteSettle,
}

enum Item {
    Delivery(Box<Pending>),
    Failed(BusError),
}

/// The [`DeliverySource`] of a remote subscription.
pub(crate) struct RemoteSource {
    rx: mpsc::UnboundedReceiver<Item>,
    /// Dropping or setting it stops the task.
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// `close` was called: `next` returns `None`.
    closed: bool,
}

impl Consumer {
    /// Opens the first stream (so that a bad subscription fails `subscribe` itself) and
    /// starts the task that keeps it open.
    ///
    /// # Errors
    /// As [`from_status`] for a stream that cannot be opened.
    pub(crate) async fn start(self) -> Result<RemoteSource, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let first = match self.open().await {
            Ok(open) => Some(open),
            Err(s) if heals(s.code()) => {
                tracing::warn!(topic = %self.topic, subscription = %self.subscription, status = %s, "Could not open the consume stream; retrying.");
                None
            }
            Err(s) => return Err(from_status(s, &self.shared.endpoint)),
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(first, tx, stop_rx));
        Ok(RemoteSource { rx, stop, task: Some(task), closed: false })
    }

    /// Keeps a stream open until stopped, the backend closes, or an error that will not heal.
    async fn run(
        self,
        mut first: Option<Stream>,
        tx: mpsc::UnboundedSender<Item>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut closed = self.shared.closed.subscribe();
        let mut reconnect = Reconnect::up_to(MAX_BACKOFF);
        loop {
            let attempt = async {
                let stream = match first.take() {
                    Some(open) => open,
                    None => self.open().await.map_err(|s| (false, s))?,
                };
                // However the pump ends (including being dropped on stop), the session dies
                // with it, so its deliveries cannot be settled any more.
                let _kill = KillOnDrop(stream.session.clone());
                self.pump(stream, &tx).await.map_err(|s| (true, s))
            };
            let ended = tokio::select! {
                () = stopped(&mut stop) => return,
                () = stopped(&mut closed) => return,
                ended = attempt => ended,
            };
            let status = match ended {
                // The receiver is gone: nobody wants deliveries any more.
                Ok(()) => return,
                Err((opened, status)) => {
                    if opened {
                        reconnect.reset();
                    }
                    status
                }
            };
            if !heals(status.code()) {
                let _ = tx.send(Item::Failed(from_status(status, &self.shared.endpoint)));
                return;
            }
            let delay = reconnect.next_delay();
            tracing::info!(topic = %self.topic, subscription = %self.subscription, status = %status, retry_in_ms = delay.as_millis() as u64, "Consume stream broke; reopening.");
            tokio::select! {
                () = stopped(&mut stop) => return,
                () = stopped(&mut closed) => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Opens a stream with `prefetch` credits and waits for `opened`.
    async fn open(&self) -> Result<Stream, Status> {
        let mut shutdowns = self.shared.shutdowns();
        shutdowns.borrow_and_update();
        let (out, out_rx) = mpsc::unbounded_channel();
        let open = api::consume_request::Open {
            topic: self.topic.to_string(),
            subscription: self.subscription.to_string(),
            credits: self.prefetch,
        };
        let _ = out.send(api::ConsumeRequest { request_id: 0, request: Some(In::Open(open)) });
        let opening = async {
            let mut inbound =
                self.shared.client().consume(UnboundedReceiverStream::new(out_rx)).await?.into_inner();
            match inbound.message().await? {
                Some(api::ConsumeResponse { response: Some(Out::Opened(_)) }) => Ok(inbound),
                Some(_) => Err(Status::internal("the server answered `open` with something else")),
                None => Err(Status::unavailable("the server ended the stream before `opened`")),
            }
        };
        let inbound = tokio::time::timeout(OPEN_TIMEOUT, opening)
            .await
            .map_err(|_| Status::deadline_exceeded("no `opened` from the server in time"))??;
        let session = Session::new(self.mode, self.shared.endpoint.clone(), out, self.prefetch);
        Ok(Stream { session: Arc::new(session), inbound, shutdowns })
    }

    /// Reads the stream until it ends: deliveries go to `tx`, answers to their waiters.
    /// `Ok` when `tx`'s receiver is gone; otherwise the status that ended the stream.
    async fn pump(&self, stream: Stream, tx: &mpsc::UnboundedSender<Item>) -> Result<(), Status> {
        let Stream { session, mut inbound, mut shutdowns } = stream;
        let shutdown = async move {
            // An ended watch (a server without health service) never reports: only broken
            // streams tell of restarts then.
            if shutdowns.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(shutdown);
        loop {
            let response = tokio::select! {
                response = inbound.message() => response?,
                () = &mut shutdown => return Err(Status::unavailable("the server is shutting down")),
            };
            let Some(response) = response else {
                return Err(Status::unavailable("the server ended the consume stream"));
            };
            match response.response {
                Some(Out::Deliveries(batch)) => {
                    for d in batch.deliveries {
                        if tx.send(Item::Delivery(Box::new(self.pending(&session, d)))).is_err() {
                            return Ok(());
                        }
                    }
                }
                Some(Out::Settled(settled)) => session.answer(settled),
                Some(Out::Opened(_)) | None => {}
            }
        }
    }

    fn pending(&self, session: &Arc<Session>, d: api::Delivery) -> Pending {
        if self.mode == Mode::Stream {
            session.delivered(d.partition, d.offset);
        }
        let message = convert::message_from_event(d.event.unwrap_or_default());
        let info = DeliveryInfo::new(self.topic.clone(), self.subscription.clone(), d.partition, d.offset)
            .with_attempt(d.attempt.max(1))
            .with_published_at(d.published_at.map(convert::timestamp_from_proto));
        let settle = RemoteSettle {
            session: session.clone(),
            receipt: d.receipt,
            partition: d.partition,
            offset: d.offset,
        };
        Pending { message, info, settle }
    }
}

/// Kills a session when dropped.
struct KillOnDrop(Arc<Session>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill();
    }
}

#[async_trait::async_trait]
impl DeliverySource for RemoteSource {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            if self.closed {
                return None;
            }
            match self.rx.recv().await? {
                Item::Delivery(p) if p.settle.session.alive() => {
                    let Pending { message, info, settle } = *p;
                    return Some(Ok(switchboard_core::backend::delivery(message, info, Box::new(settle))));
                }
                // From a broken stream: its lease is gone and it will be delivered again.
                Item::Delivery(_) => {}
                Item::Failed(e) => {
                    self.rx.close();
                    return Some(Err(e));
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), BusError> {
        self.closed = true;
        let _ = self.stop.send(true);
        self.rx.close();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl Drop for RemoteSource {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
