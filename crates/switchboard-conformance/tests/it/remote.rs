//! `switchboard serve` started in-process on a loopback port, one per case, reached over
//! gRPC through the `switchboard://` backend. A restart shuts the server down and starts a
//! new one on the same port and data directory; open subscriptions reconnect by themselves.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use switchboard_conformance::{Harness, Target};
use switchboard_core::backend::Backend;
use switchboard_core::contract::Capabilities;
use switchboard_remote::RemoteBackend;
use switchboard_server::{Server, ServerConfig};
use tokio::sync::Mutex;

struct RemoteHarness {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    server: Mutex<Option<Server>>,
}

fn config(dir: &std::path::Path, grpc: SocketAddr) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_owned(),
        http_addr: "127.0.0.1:0".parse().expect("address"),
        grpc_addr: grpc,
        ..ServerConfig::default()
    }
}

/// `switchboard serve` has every capability.
pub(crate) fn target() -> Target {
    Target::new("remote", Capabilities::ALL, harness).with_restart()
}

pub(crate) async fn harness() -> anyhow::Result<Arc<dyn Harness>> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let server = Server::start(config(dir.path(), "127.0.0.1:0".parse().expect("address")))
        .await
        .context("start the server")?;
    let addr = server.grpc_addr();
    Ok(Arc::new(RemoteHarness { dir, addr, server: Mutex::new(Some(server)) }))
}

#[async_trait::async_trait]
impl Harness for RemoteHarness {
    fn name(&self) -> &str {
        "remote"
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        let backend = RemoteBackend::connect(&format!("switchboard://{}", self.addr)).await?;
        Ok(Arc::new(backend))
    }

    async fn restart_broker(&self) -> anyhow::Result<()> {
        let mut server = self.server.lock().await;
        if let Some(old) = server.take() {
            old.shutdown().await.context("shut the server down")?;
        }
        *server =
            Some(Server::start(config(self.dir.path(), self.addr)).await.context("restart the server")?);
        Ok(())
    }

    async fn shutdown(&self) {
        if let Some(server) = self.server.lock().await.take() {
            let _ = server.shutdown().await;
        }
    }
}
