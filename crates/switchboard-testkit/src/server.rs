//! `switchboard serve` in-process for tests: loopback ports picked by the OS, a temporary data
//! directory, optional bearer tokens, and a restart on the same ports and data.

use std::net::SocketAddr;
use std::path::Path;

use switchboard_server::{Action, Permission, Server, ServerConfig, ServerError, TlsConfig, TokenConfig};

use crate::WAIT;

/// A token of [`test_tokens`] allowed everything.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
/// A token of [`test_tokens`] that may only publish to and consume from topics matching
/// `orders*`.
pub const ORDERS_TOKEN: &str = "orders-token-0123456789abcdef";
/// A token of [`test_tokens`] that may do everything, but only on topics matching `orders*`.
pub const ORDERS_ADMIN_TOKEN: &str = "orders-admin-token-0123456789";

/// Settings for a test server: both listeners on port 0 of loopback, data in `dir`.
///
/// # Panics
/// Never in practice (the loopback addresses are constants).
pub fn test_config(dir: &Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_owned(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    }
}

/// Three tokens: [`ADMIN_TOKEN`] (everything), [`ORDERS_ADMIN_TOKEN`] (everything on
/// `orders*`) and [`ORDERS_TOKEN`] (publish and consume on `orders*`).
pub fn test_tokens() -> Vec<TokenConfig> {
    let token = |name: &str, token: &str, topics: &str, actions: &[Action]| TokenConfig {
        name: name.into(),
        token: token.into(),
        permissions: vec![Permission { topics: topics.into(), actions: actions.to_vec() }],
    };
    let all = [Action::Publish, Action::Consume, Action::Admin, Action::Telemetry];
    vec![
        token("admin", ADMIN_TOKEN, "*", &all),
        token("orders-admin", ORDERS_ADMIN_TOKEN, "orders*", &all),
        token("orders", ORDERS_TOKEN, "orders*", &[Action::Publish, Action::Consume]),
    ]
}

/// A running `switchboard serve` in a temporary data directory, removed when this is dropped.
pub struct TestServer {
    /// `None` between [`stop`](TestServer::stop) and [`start_again`](TestServer::start_again).
    server: Option<Server>,
    dir: tempfile::TempDir,
    /// The settings it runs with, with the ports it was given: a restart reuses both.
    config: ServerConfig,
}

impl TestServer {
    /// A server without auth.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server with the tokens of [`test_tokens`].
    pub async fn start_with_auth() -> TestServer {
        TestServer::start_with(|c| c.tokens = test_tokens()).await
    }

    /// A server whose [`test_config`] `configure` adjusts.
    ///
    /// # Panics
    /// If there is no temporary directory or the server does not start.
    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let mut config = test_config(dir.path());
        configure(&mut config);
        let mut s = TestServer { server: None, dir, config };
        s.start_again().await;
        s
    }

    /// The server.
    ///
    /// # Panics
    /// If it is stopped.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the test server is stopped")
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The HTTP listener's address (REST, GraphQL, metrics); it stays across restarts.
    pub fn http_addr(&self) -> SocketAddr {
        self.config.http_addr
    }

    /// The gRPC listener's address; it stays across restarts.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.config.grpc_addr
    }

    /// `http://` and the HTTP address.
    pub fn http(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    /// `http://` and the gRPC address (for a tonic channel).
    pub fn grpc(&self) -> String {
        format!("http://{}", self.grpc_addr())
    }

    /// The SDK's URL of this server: `switchboard://` and the gRPC address.
    pub fn url(&self) -> String {
        format!("switchboard://{}", self.grpc_addr())
    }

    /// Shuts the server down gracefully and gives its result; the data directory goes too.
    ///
    /// # Errors
    /// As [`Server::shutdown`]; `Ok` if it was already stopped.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        match self.server.take() {
            Some(s) => s.shutdown().await,
            None => Ok(()),
        }
    }

    /// Shuts the server down gracefully (within [`WAIT`]), keeping its data directory and
    /// ports for [`start_again`](TestServer::start_again).
    ///
    /// # Panics
    /// If the shutdown fails or takes longer.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            tokio::time::timeout(WAIT, s.shutdown())
                .await
                .expect("the test server shuts down in time")
                .expect("the test server shuts down cleanly");
        }
    }

    /// Starts the server again on the same ports and data directory (or for the first time).
    ///
    /// # Panics
    /// If it is running, or does not start.
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "the test server is running");
        let server = Server::start(self.config.clone()).await.expect("the test server starts");
        self.config.http_addr = server.http_addr();
        self.config.grpc_addr = server.grpc_addr();
        self.server = Some(server);
    }

    /// [`stop`](TestServer::stop), then [`start_again`](TestServer::start_again).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// The server and its data directory, for a test that manages them itself.
    ///
    /// # Panics
    /// If it is stopped.
    pub fn into_parts(mut self) -> (Server, tempfile::TempDir) {
        let server = self.server.take().expect("the test server is stopped");
        (server, self.dir)
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`, made with the `openssl`
/// command (which the TLS tests need).
///
/// # Panics
/// When `openssl` is missing or fails.
pub fn self_signed(dir: &Path) -> TlsConfig {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command is needed to make a test certificate");
    assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    TlsConfig { cert, key }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_keeps_the_ports_and_the_data_directory() {
        let mut s = TestServer::start_with_auth().await;
        let (http, grpc, dir) = (s.http_addr(), s.grpc_addr(), s.dir().to_owned());
        assert_ne!((http.port(), grpc.port()), (0, 0));
        s.restart().await;
        assert_eq!((s.http_addr(), s.grpc_addr(), s.dir()), (http, grpc, dir.as_path()));
        assert_eq!(s.server().grpc_addr(), grpc);
        s.shutdown().await.expect("clean shutdown");
    }
}
