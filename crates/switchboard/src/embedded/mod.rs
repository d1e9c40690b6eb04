//! The `embedded:` backend: the broker runs inside the service's process, on its own storage
//! engine. The default, and the one the test suites run on.
//!
//! One broker per data directory per process: every `Bus` connected to the same
//! `embedded:` URL shares it, so two services in one process (or a test and the service
//! it tests) talk through one broker, and the broker closes when the last handle goes.

mod errors;
mod queue;
mod stream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use switchboard_broker::{
    Broker, BrokerConfig, PublishOptions as BrokerPublishOptions, StartPosition, SubscriptionConfig,
    SubscriptionMode, TopicConfig,
};
use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{
    BusError, Capabilities, Capability, Mode, PublishOptions, Start, Subscription, SubscriptionSpec,
    SubscriptionStats, TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, SystemClock, TopicName};
use switchboard_storage::MemStorage;

use errors::to_bus;

/// The in-process broker as a [`Backend`].
#[derive(Clone)]
pub struct EmbeddedBackend {
    broker: Broker,
    persistent: bool,
    /// Keeps the process-wide registry entry alive; `None` for brokers given by the caller.
    _shared: Option<Arc<SharedBroker>>,
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend").field("persistent", &self.persistent).finish()
    }
}

/// Brokers open in this process, by data directory (`None`: the in-memory one).
fn registry() -> &'static Mutex<HashMap<Option<PathBuf>, Weak<SharedBroker>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Option<PathBuf>, Weak<SharedBroker>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Closes the broker when the last [`EmbeddedBackend`] sharing it is gone.
struct SharedBroker(Broker, Option<PathBuf>);

impl SharedBroker {
    /// Forgets this broker so the next `open` of its directory starts a new one.
    fn unregister(&self) {
        let mut reg = registry().lock();
        if reg.get(&self.1).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
            reg.remove(&self.1);
        }
    }
}

impl Drop for SharedBroker {
    fn drop(&mut self) {
        self.unregister();
        let broker = self.0.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { broker.close().await });
        }
    }
}

impl EmbeddedBackend {
    /// Opens (or joins, if this process has it open) the durable broker in `dir`, with
    /// fsync before every acknowledgement.
    ///
    /// # Errors
    /// The directory cannot be created or locked (another process has it), or its state is
    /// unreadable.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<EmbeddedBackend, BusError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| BusError::backend(errors::BACKEND, false, e))?;
        let key = dir.canonicalize().map_err(|e| BusError::backend(errors::BACKEND, false, e))?;
        if let Some(shared) = registry().lock().get(&Some(key.clone())).and_then(Weak::upgrade) {
            return Ok(EmbeddedBackend { broker: shared.0.clone(), persistent: true, _shared: Some(shared) });
        }
        let broker = Broker::open(&key).await.map_err(to_bus)?;
        Ok(EmbeddedBackend::register(Some(key), broker, true))
    }

    /// The process-wide in-memory broker: fast, shared by every `embedded:` connection of
    /// this process, and gone when the last one closes.
    ///
    /// # Errors
    /// Only if the in-memory broker cannot start (not expected).
    pub async fn in_memory() -> Result<EmbeddedBackend, BusError> {
        if let Some(shared) = registry().lock().get(&None).and_then(Weak::upgrade) {
            return Ok(EmbeddedBackend {
                broker: shared.0.clone(),
                persistent: false,
                _shared: Some(shared),
            });
        }
        let broker = Broker::open_with(
            Arc::new(MemStorage::new()),
            "/switchboard-memory",
            Arc::new(SystemClock),
            BrokerConfig::default(),
        )
        .await
        .map_err(to_bus)?;
        Ok(EmbeddedBackend::register(None, broker, false))
    }

    fn register(key: Option<PathBuf>, broker: Broker, persistent: bool) -> EmbeddedBackend {
        let shared = Arc::new(SharedBroker(broker.clone(), key.clone()));
        registry().lock().insert(key, Arc::downgrade(&shared));
        EmbeddedBackend { broker, persistent, _shared: Some(shared) }
    }

    /// Wraps a broker opened by the caller (tests with injected storage or clocks).
    pub fn from_broker(broker: Broker, persistent: bool) -> EmbeddedBackend {
        EmbeddedBackend { broker, persistent, _shared: None }
    }

    /// The broker, for what the contract does not cover (admin, seek, redrive).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

fn topic_config(spec: &TopicSpec) -> TopicConfig {
    TopicConfig { partitions: spec.partitions, ..TopicConfig::default() }
}

fn subscription_config(spec: &SubscriptionSpec) -> SubscriptionConfig {
    SubscriptionConfig {
        mode: match spec.mode {
            Mode::Queue => SubscriptionMode::Queue,
            Mode::Stream => SubscriptionMode::Stream,
        },
        start: match spec.start {
            Start::Earliest => StartPosition::Earliest,
            Start::Latest => StartPosition::Latest,
        },
        lease_ms: u64::try_from(spec.lease.as_millis()).unwrap_or(u64::MAX),
        max_deliveries: spec.max_deliveries,
        dead_letter_topic: spec.dead_letter_topic.clone(),
        ordered_by_key: spec.ordered_by_key,
        // Prefetch is per member (set on the consumer), so members with different
        // prefetch can share one subscription.
        ..SubscriptionConfig::default()
    }
}

impl EmbeddedBackend {
    async fn ensure(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
        if self.broker.topic_info(topic).is_ok() {
            return Ok(());
        }
        match self.broker.create_topic(topic, topic_config(spec)).await {
            Ok(_) | Err(switchboard_broker::BrokerError::TopicExists(_)) => Ok(()),
            Err(e) => Err(to_bus(e)),
        }
    }
}

#[async_trait::async_trait]
impl Publisher for EmbeddedBackend {
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError> {
        // `publish_count` is an atomic read: a cheap existence check for the hot path
        // (`topic_info` would gather partition details on every publish).
        if self.broker.publish_count(topic).is_err() {
            self.ensure(topic, &TopicSpec::default()).await?;
        }
        let options = BrokerPublishOptions { deliver_at: options.deliver_at };
        self.broker.publish_batch(topic, messages, options).await.map(|_| ()).map_err(to_bus)
    }

    async fn flush(&self) -> Result<(), BusError> {
        // Publishes return only once durable; nothing is buffered.
        Ok(())
    }
}

#[async_trait::async_trait]
impl Subscriber for EmbeddedBackend {
    async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        spec.validate()?;
        self.ensure(topic, &TopicSpec::default()).await?;
        self.broker
            .create_subscription(topic, &spec.name, subscription_config(&spec))
            .await
            .map_err(to_bus)?;
        let source: Box<dyn switchboard_core::backend::DeliverySource> = match spec.mode {
            Mode::Queue => Box::new(queue::QueueSource::new(
                self.broker.clone(),
                topic.clone(),
                spec.name.clone(),
                spec.prefetch,
            )?),
            Mode::Stream => Box::new(stream::StreamSource::new(
                self.broker.clone(),
                topic.clone(),
                spec.name.clone(),
                spec.prefetch,
            )?),
        };
        Ok(switchboard_core::backend::subscription(topic.clone(), spec, source))
    }

    async fn stats(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<SubscriptionStats, BusError> {
        let s = self.broker.stats(topic, subscription).map_err(to_bus)?;
        Ok(SubscriptionStats::new(s.backlog, s.in_flight, s.lag).with_dead_lettered(Some(s.dead_lettered)))
    }
}

#[async_trait::async_trait]
impl Backend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        errors::BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        if self.persistent { Capabilities::ALL } else { Capabilities::ALL.without(Capability::Persistence) }
    }

    async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
        self.ensure(topic, spec).await
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        match self.broker.delete_topic(topic).await {
            Ok(()) | Err(switchboard_broker::BrokerError::TopicNotFound(_)) => Ok(()),
            Err(e) => Err(to_bus(e)),
        }
    }

    async fn delete_subscription(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<(), BusError> {
        match self.broker.delete_subscription(topic, subscription).await {
            Ok(())
            | Err(
                switchboard_broker::BrokerError::SubscriptionNotFound { .. }
                | switchboard_broker::BrokerError::TopicNotFound(_),
            ) => Ok(()),
            Err(e) => Err(to_bus(e)),
        }
    }

    async fn close(&self) -> Result<(), BusError> {
        // Closing is for everyone sharing this broker in the process: forget it first so the
        // next `open` of the directory starts a new one.
        if let Some(shared) = &self._shared {
            shared.unregister();
        }
        self.broker.close().await.map_err(to_bus)
    }
}
