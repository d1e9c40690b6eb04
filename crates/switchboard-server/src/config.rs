//! The server's typed configuration: defaults here, overridden by a TOML file, then by
//! environment variables and flags (applied by the CLI).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchboard_broker::{BrokerConfig, TopicConfig};

use crate::auth::TokenConfig;

/// Everything `switchboard serve` can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the embedded broker keeps its data.
    pub data_dir: PathBuf,
    /// REST, GraphQL, `/metrics`, `/healthz` and `/readyz` listen here.
    pub http_addr: SocketAddr,
    /// gRPC listens here.
    pub grpc_addr: SocketAddr,
    /// TLS for every listener; plain TCP when absent.
    pub tls: Option<TlsConfig>,
    /// Bearer tokens and what each may do. None configured: every request is allowed and the
    /// server refuses to listen on anything but loopback.
    pub tokens: Vec<TokenConfig>,
    /// Request and resource limits.
    pub limits: Limits,
    /// Settings of topics created without explicit settings.
    pub topic_defaults: TopicConfig,
    /// Broker-wide settings.
    pub broker: BrokerConfig,
    /// What the service graph (the dashboard's map) may hold.
    pub service_graph: switchboard_graph::Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls: None,
            tokens: Vec::new(),
            limits: Limits::default(),
            topic_defaults: TopicConfig::default(),
            broker: BrokerConfig::default(),
            service_graph: switchboard_graph::Limits::default(),
        }
    }
}

/// Certificate and key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8 or RSA or SEC1).
    pub key: PathBuf,
}

/// Limits that protect the server from one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message accepted (data plus attributes), bytes.
    pub max_message_bytes: usize,
    /// Most messages in one publish batch.
    pub max_batch_messages: usize,
    /// Largest HTTP request body or gRPC message, bytes.
    pub max_request_bytes: usize,
    /// Most concurrent connections per listener.
    pub max_connections: usize,
    /// Most unacked deliveries one consume stream may hold (its credit ceiling).
    pub max_consume_credits: u32,
    /// Longest long-poll wait, ms.
    pub max_wait_ms: u64,
    /// Deepest GraphQL query.
    pub max_graphql_depth: usize,
    /// Most complex GraphQL query.
    pub max_graphql_complexity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: switchboard_broker::DEFAULT_MAX_MESSAGE_BYTES,
            max_batch_messages: 1000,
            max_request_bytes: 16 * 1024 * 1024,
            max_connections: 10_000,
            max_consume_credits: 10_000,
            max_wait_ms: 20_000,
            max_graphql_depth: 10,
            max_graphql_complexity: 500,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("configuration file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value breaks a rule.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Reads a TOML file over the defaults.
    ///
    /// # Errors
    /// The file is unreadable or invalid.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// Checks rules that span several values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() {
            for addr in [self.http_addr, self.grpc_addr] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid(format!(
                        "no auth tokens are configured, so the server only listens on loopback; {addr} is not loopback (configure [[tokens]] or listen on 127.0.0.1)"
                    )));
                }
            }
        }
        for t in &self.tokens {
            if t.token.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "token {:?} is shorter than 16 characters",
                    t.name
                )));
            }
        }
        if self.limits.max_batch_messages == 0 || self.limits.max_message_bytes == 0 {
            return Err(ConfigError::Invalid("limits must be at least 1".into()));
        }
        self.topic_defaults.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}
