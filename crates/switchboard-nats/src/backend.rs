//! [`NatsBackend`]: the shared state behind the contract traits, and the trait impls, which
//! only check arguments and delegate to the modules that do the work.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{
    BusError, Capabilities, Capability, PublishOptions, Subscription, SubscriptionSpec, SubscriptionStats,
    TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, TopicName};
use tokio::sync::{RwLock, watch};

use crate::connect::REQUEST_TIMEOUT;
use crate::errors::BACKEND;

/// The NATS JetStream backend; see the crate docs for how the contract maps onto JetStream.
/// Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct NatsBackend {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend").field("endpoint", &self.inner.endpoint).finish()
    }
}

/// State shared by the backend, its subscriptions and their deliveries.
pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) js: async_nats::jetstream::Context,
    /// `host:port`, for errors.
    pub(crate) endpoint: String,
    /// Topics whose stream is known to exist (so publish does not ask every time).
    pub(crate) ensured: Mutex<HashSet<TopicName>>,
    /// Publishes hold it shared; `flush` takes it exclusively to wait for them.
    pub(crate) publishing: RwLock<()>,
    /// Set once by `close`; subscriptions watch it and end.
    pub(crate) closed: watch::Sender<bool>,
    /// Whether the cursor bucket of stream subscriptions is known to exist.
    pub(crate) bucket_ready: AtomicBool,
    /// Stream subscriptions open on this connection (for stats and the last commit write on
    /// `close`).
    pub(crate) cursors: Mutex<Vec<Weak<crate::cursor::Cursor>>>,
}

impl Inner {
    /// Fails with [`BusError::Closed`] after `close`.
    pub(crate) fn check_open(&self) -> Result<(), BusError> {
        if *self.closed.borrow() { Err(BusError::Closed) } else { Ok(()) }
    }
}

impl NatsBackend {
    /// Connects to a NATS server with JetStream enabled, e.g. `nats://127.0.0.1:4222`.
    ///
    /// # Errors
    /// [`BusError::InvalidUrl`] for a URL that is not `nats://` or `tls://`,
    /// [`BusError::Unreachable`] when the server cannot be reached (tried once, 3 s at most),
    /// [`BusError::Backend`] when the server has no JetStream or refuses the credentials.
    pub async fn connect(url: &str) -> Result<NatsBackend, BusError> {
        let c = crate::connect::connect(url).await?;
        let (closed, _) = watch::channel(false);
        let inner = Inner {
            client: c.client,
            js: c.js,
            endpoint: c.endpoint,
            ensured: Mutex::new(HashSet::new()),
            publishing: RwLock::new(()),
            closed,
            bucket_ready: AtomicBool::new(false),
            cursors: Mutex::new(Vec::new()),
        };
        Ok(NatsBackend { inner: Arc::new(inner) })
    }

    /// The underlying `async-nats` client, for what the contract does not cover.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The JetStream stream name that holds `topic`.
    pub fn stream_name(topic: &TopicName) -> String {
        crate::naming::stream_name(topic)
    }

    /// The subject messages of `topic` are published on.
    pub fn subject(topic: &TopicName) -> String {
        crate::naming::subject(topic)
    }
}

impl NatsBackend {
    /// What this backend supports; the crate docs explain each flag.
    pub const CAPABILITIES: Capabilities = Capabilities::NONE
        .with(Capability::Queue)
        .with(Capability::Stream)
        .with(Capability::ReplayFromStart)
        .with(Capability::QueueReplay)
        .with(Capability::NackDelay)
        .with(Capability::LeaseExtension)
        .with(Capability::Dedup)
        .with(Capability::Persistence)
        .with(Capability::Stats);
}

#[async_trait::async_trait]
impl Publisher for NatsBackend {
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError> {
        self.inner.check_open()?;
        if options.deliver_at.is_some() {
            return Err(BusError::Unsupported { backend: BACKEND, feature: "delayed_delivery" });
        }
        crate::publish::publish(&self.inner, topic, messages).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.inner.check_open()?;
        drop(self.inner.publishing.write().await);
        crate::publish::flush_client(&self.inner).await
    }
}

#[async_trait::async_trait]
impl Subscriber for NatsBackend {
    async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        self.inner.check_open()?;
        crate::subscribe::subscribe(&self.inner, topic, spec).await
    }

    async fn stats(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<SubscriptionStats, BusError> {
        self.inner.check_open()?;
        crate::subscribe::stats(&self.inner, topic, subscription).await
    }
}

#[async_trait::async_trait]
impl Backend for NatsBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        NatsBackend::CAPABILITIES
    }

    async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
        self.inner.check_open()?;
        if spec.partitions == 0 {
            return Err(BusError::InvalidArgument("a topic needs at least 1 partition".into()));
        }
        crate::publish::ensure_topic(&self.inner, topic).await
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        use async_nats::jetstream::ErrorCode;
        use async_nats::jetstream::context::DeleteStreamErrorKind;
        self.inner.check_open()?;
        self.inner.ensured.lock().remove(topic);
        match self.inner.js.delete_stream(crate::naming::stream_name(topic)).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                DeleteStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    Ok(())
                }
                _ => Err(crate::errors::map("deleting a topic's stream", e, true)),
            },
        }
    }

    async fn delete_subscription(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<(), BusError> {
        self.inner.check_open()?;
        crate::subscribe::delete(&self.inner, topic, subscription).await
    }

    async fn close(&self) -> Result<(), BusError> {
        if self.inner.closed.send_replace(true) {
            return Ok(());
        }
        drop(self.inner.publishing.write().await);
        // Write the commit points of open stream subscriptions before the connection goes.
        let cursors: Vec<_> = self.inner.cursors.lock().iter().filter_map(Weak::upgrade).collect();
        let committed = futures::future::join_all(cursors.iter().map(|c| c.flush())).await;
        // A deleted subscription has nothing left to commit.
        let committed = committed
            .into_iter()
            .filter(|r| !matches!(r, Err(BusError::NotFound { .. })))
            .collect::<Result<Vec<()>, BusError>>()
            .map(drop);
        let flushed = crate::publish::flush_client(&self.inner).await;
        let drained = match tokio::time::timeout(REQUEST_TIMEOUT, self.inner.client.drain()).await {
            Ok(r) => r.map_err(|e| crate::errors::map("drain", e, true)),
            Err(_) => Err(crate::errors::backend_msg("drain timed out", true)),
        };
        committed.and(flushed).and(drained)
    }
}
