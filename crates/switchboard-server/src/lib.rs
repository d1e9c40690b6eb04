//! # switchboard-server
//!
//! `switchboard serve`: the embedded broker as a server any service in any language can use.
//!
//! - **gRPC** (`proto/switchboard/v1`), the fast data plane: publish (unary batches and a
//!   client stream), consume as a bidirectional stream with credits, acks, nacks and lease
//!   extension, admin, health checking and reflection;
//! - **REST** under `/v1`: CloudEvents over HTTP (binary, structured and batch modes), long-poll
//!   receive, ack/nack/extend by receipt, stream reads, admin, dead letters, `/openapi.json`;
//! - **GraphQL** at `/graphql`: topics, subscriptions and their counts and rates, mutations,
//!   and a live tail over WebSocket;
//! - `/metrics` (Prometheus), `/healthz`, `/readyz`; bearer tokens with per-topic permissions;
//!   TLS on every listener; graceful shutdown.
//!
//! [`Server::start`] binds both listeners and returns at once; [`Server::shutdown`] stops
//! accepting, lets requests in flight finish and flushes the broker.

mod auth;
mod config;
mod dashboard;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod graphql;
mod grpc;
mod http;
mod http_listener;
mod metrics;
mod rest;
mod state;
mod telemetry;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_broker::{Broker, BrokerError};
use switchboard_core::SystemClock;
use switchboard_storage::FileStorage;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::{
    Action, Auth, AuthError, Permission, Principal, SERVICE_HEADER, TokenConfig, UNKNOWN_SERVICE,
};
pub use config::{ConfigError, Limits, ServerConfig, TlsConfig};
pub use error::ApiError;
/// The generated gRPC types, server and client (`switchboard.v1`, `io.cloudevents.v1`).
pub use grpc::pb as proto;
pub use metrics::{Api, Metrics};
pub use state::AppState;
pub use telemetry::{SAMPLE_INTERVAL, Telemetry};
pub use tls::TlsError;

/// How long shutdown waits for requests in flight before closing anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker failed to open or to flush.
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A running server.
pub struct Server {
    state: AppState,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    stop: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// One server per data directory; released when the server is dropped.
    _dir_lock: switchboard_broker::DataDirLock,
}

impl Server {
    /// Opens the broker, binds both listeners and starts serving. Port 0 picks a free port
    /// (see [`http_addr`](Self::http_addr) and [`grpc_addr`](Self::grpc_addr)).
    ///
    /// # Errors
    /// Invalid configuration, TLS files, a port in use, or a broker that cannot open.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let tls_pem = config.tls.as_ref().map(tls::read_pem).transpose()?;
        let http_tls = tls_pem.as_ref().map(|(c, k)| tls::server_config(c, k)).transpose()?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.http_addr, source })?;
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.grpc_addr, source })?;
        let local =
            |l: &TcpListener, addr| l.local_addr().map_err(|source| ServerError::Bind { addr, source });
        let http_addr = local(&http_listener, config.http_addr)?;
        let grpc_addr = local(&grpc_listener, config.grpc_addr)?;

        let dir_lock = switchboard_broker::lock_data_dir(&config.data_dir)?;
        let mut broker_config = config.broker.clone();
        // The server's batch limit is the one every API enforces.
        broker_config.max_batch_messages = config.limits.max_batch_messages;
        broker_config.max_message_bytes = config.limits.max_message_bytes;
        let broker = Broker::open_with(
            Arc::new(FileStorage::new()),
            &config.data_dir,
            Arc::new(SystemClock),
            broker_config,
        )
        .await?;
        if config.tokens.is_empty() {
            tracing::warn!(
                "No auth tokens configured: listening on loopback only, and every request is allowed."
            );
        }
        let state = AppState::new(broker, config);
        let (stop, stop_rx) = watch::channel(false);

        tokio::spawn(telemetry::sample_until_stopped(state.clone(), stop_rx.clone()));
        let app = http::router(state.clone());
        let max_conn = state.config.limits.max_connections;
        let http_task =
            tokio::spawn(http_listener::serve(http_listener, app, http_tls, max_conn, stop_rx.clone()));

        let mut grpc = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(256)
            .http2_keepalive_interval(Some(Duration::from_secs(30)));
        if let Some((cert, key)) = &tls_pem {
            let identity = tonic::transport::Identity::from_pem(cert, key);
            grpc = grpc.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        }
        let mut grpc_stopped = stop_rx;
        // Without TCP_NODELAY, Nagle's algorithm holds small replies back ~40 ms.
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let grpc_task = tokio::spawn(
            grpc.add_routes(grpc::routes(state.clone())).serve_with_incoming_shutdown(incoming, async move {
                stopped(&mut grpc_stopped).await;
            }),
        );
        state.set_ready(true);
        tracing::info!(%http_addr, %grpc_addr, tls = state.config.tls.is_some(), data_dir = %state.config.data_dir.display(), "Switchboard is serving.");
        Ok(Server { state, http_addr, grpc_addr, stop, http_task, grpc_task, _dir_lock: dir_lock })
    }

    /// Where REST, GraphQL and metrics listen.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where gRPC listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The shared state (broker, metrics, configuration).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    ///
    /// # Errors
    /// As for [`shutdown`](Self::shutdown).
    pub async fn run_until_signal(self) -> Result<(), ServerError> {
        wait_for_signal().await;
        tracing::info!("Signal received: shutting down.");
        self.shutdown().await
    }

    /// Stops accepting, waits for requests in flight (up to 30 s), then flushes and closes
    /// the broker.
    ///
    /// # Errors
    /// The broker's final flush failed, or the gRPC transport failed.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.state.set_ready(false);
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.http_task).await;
        let grpc = tokio::time::timeout(SHUTDOWN_GRACE, self.grpc_task).await;
        self.state.broker.close().await?;
        if let Ok(Ok(Err(e))) = grpc {
            return Err(e.into());
        }
        tracing::info!("Switchboard stopped.");
        Ok(())
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGTERM; only SIGINT stops the server.");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Resolves once the server is told to stop (the guard `wait_for` returns is not `Send`, so
/// it must not live across an await in a spawned task).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
