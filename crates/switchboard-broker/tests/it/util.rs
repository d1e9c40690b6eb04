//! Shared test scaffolding: a broker on in-memory storage with a manual clock, restartable.

use std::sync::Arc;
use std::time::Duration;

use switchboard_broker::{Broker, BrokerConfig, BrokerDelivery, QueueConsumer, Receipt};
use switchboard_core::ManualClock;
use switchboard_storage::MemStorage;
pub use switchboard_testkit::{msg, sub, topic};

/// The data of a broker delivery as text (the SDK's `Delivery` has the testkit's `body`).
pub fn body(d: &BrokerDelivery) -> String {
    String::from_utf8(d.message.data.to_vec()).unwrap()
}

pub fn receipts(ds: &[BrokerDelivery]) -> Vec<Receipt> {
    ds.iter().map(|d| d.receipt.unwrap()).collect()
}

/// Broker settings for deterministic tests: no background ticker.
pub fn test_config() -> BrokerConfig {
    BrokerConfig { tick_ms: 0, ..BrokerConfig::default() }
}

/// A broker on [`MemStorage`] with a [`ManualClock`], which can crash and restart.
pub struct Env {
    pub storage: MemStorage,
    pub clock: ManualClock,
    pub broker: Broker,
    pub config: BrokerConfig,
}

impl Env {
    pub async fn new() -> Env {
        Env::with_config(test_config()).await
    }

    pub async fn with_config(config: BrokerConfig) -> Env {
        let storage = MemStorage::new();
        let clock = ManualClock::default();
        let broker = open(&storage, &clock, &config).await;
        Env { storage, clock, broker, config }
    }

    /// Process crash: the broker vanishes without closing; what was written stays.
    pub async fn crash_and_restart(&mut self) {
        self.broker = open(&self.storage, &self.clock, &self.config).await;
    }

    /// Power cut: everything not fsynced is lost, then the broker starts again.
    pub async fn power_cut_and_restart(&mut self) {
        self.storage.power_cut();
        self.broker = open(&self.storage, &self.clock, &self.config).await;
    }

    pub fn clock_now_plus(&self, d: Duration) -> switchboard_core::Timestamp {
        use switchboard_core::Clock;
        self.clock.now().saturating_add(d)
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// Receives everything available without waiting.
    pub async fn drain(&self, c: &QueueConsumer) -> Vec<BrokerDelivery> {
        let mut all = Vec::new();
        loop {
            let got = c.receive(1000, Duration::ZERO).await.unwrap();
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
    }
}

pub async fn open(storage: &MemStorage, clock: &ManualClock, config: &BrokerConfig) -> Broker {
    Broker::open_with(Arc::new(storage.clone()), "/data", Arc::new(clock.clone()), config.clone())
        .await
        .expect("broker opens")
}
