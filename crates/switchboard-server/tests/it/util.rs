//! A real server on loopback ports picked by the OS, in a temporary data directory.

use std::net::SocketAddr;

use switchboard_server::{Action, Permission, Server, ServerConfig, TokenConfig};

/// A token allowed everything.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
/// A token that may only publish to and consume from topics matching `orders*`.
pub const ORDERS_TOKEN: &str = "orders-token-0123456789abcdef";
/// A token that may do everything, but only on topics matching `orders*`.
pub const ORDERS_ADMIN_TOKEN: &str = "orders-admin-token-0123456789";

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn http(&self) -> String {
        format!("http://{}", self.server.http_addr())
    }

    pub fn grpc(&self) -> String {
        format!("http://{}", self.server.grpc_addr())
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.grpc_addr()
    }
}

/// Settings for a test server: both listeners on port 0 of loopback, data in `dir`.
pub fn test_config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_owned(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// A server without auth.
pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// A server whose settings `f` adjusts.
pub async fn start_with(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    f(&mut config);
    let server = Server::start(config).await.unwrap();
    TestServer { server, dir }
}

/// A server with two tokens: [`ADMIN_TOKEN`] and [`ORDERS_TOKEN`].
pub async fn start_with_auth() -> TestServer {
    start_with(|c| {
        c.tokens = vec![
            TokenConfig {
                name: "admin".into(),
                token: ADMIN_TOKEN.into(),
                permissions: vec![Permission {
                    topics: "*".into(),
                    actions: vec![Action::Publish, Action::Consume, Action::Admin],
                }],
            },
            TokenConfig {
                name: "orders-admin".into(),
                token: ORDERS_ADMIN_TOKEN.into(),
                permissions: vec![Permission {
                    topics: "orders*".into(),
                    actions: vec![Action::Publish, Action::Consume, Action::Admin],
                }],
            },
            TokenConfig {
                name: "orders".into(),
                token: ORDERS_TOKEN.into(),
                permissions: vec![Permission {
                    topics: "orders*".into(),
                    actions: vec![Action::Publish, Action::Consume],
                }],
            },
        ];
    })
    .await
}
