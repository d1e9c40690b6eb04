//! What every handler shares.

use std::sync::Arc;

use tokio::sync::watch;

use switchboard_broker::Broker;

use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;

/// Shared by the gRPC, REST and GraphQL handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The embedded broker.
    pub broker: Broker,
    /// Token checks.
    pub auth: Arc<Auth>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// The configuration the server runs with.
    pub config: Arc<ServerConfig>,
    /// The service graph.
    pub telemetry: Arc<Telemetry>,
    ready: Arc<watch::Sender<bool>>,
}

impl AppState {
    /// State over an open broker.
    pub fn new(broker: Broker, config: ServerConfig) -> AppState {
        AppState {
            broker,
            auth: Arc::new(Auth::new(config.tokens.clone())),
            metrics: Arc::new(Metrics::new()),
            telemetry: Arc::new(Telemetry::new(config.service_graph.clone())),
            config: Arc::new(config),
            ready: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Whether the server accepts work (false before start and while shutting down).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.send_replace(ready);
    }

    /// Resolves once the server has been ready and is no longer: shutdown has begun.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
        let _ = rx.wait_for(|r| !*r).await;
    }
}
