//! NATS JetStream: each case gets its own `nats-server` process (the machine's 2.9 binary, the
//! same as the service on 127.0.0.1:4222) on a free loopback port with its own store, so a
//! case can restart its broker (SIGKILL, then start again on the same port and store)
//! without disturbing the cases running beside it. The binary is `SWITCHBOARD_TEST_NATS_SERVER`,
//! else `/usr/sbin/nats-server`, else `nats-server` on the `PATH`; without one the nats
//! trials are listed as ignored, unless `CI` is set.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_conformance::{Harness, Target};
use switchboard_core::backend::Backend;
use switchboard_nats::NatsBackend;
use switchboard_testkit::Service;
use tokio::sync::Mutex;

pub(crate) fn target() -> Target {
    Target::new("nats", switchboard_nats::NatsBackend::CAPABILITIES, harness)
        .with_restart()
        .needs_service("no nats-server", server().map(drop))
}

/// The `nats-server` binary to start (`SWITCHBOARD_TEST_NATS_SERVER`, else on the PATH or in
/// the system's sbin directories), or why there is none.
fn server() -> Result<PathBuf, String> {
    switchboard_testkit::find(Service::NatsServer)
        .map(|found| found.path().to_owned())
        .map_err(|m| m.to_string())
}

struct NatsHarness {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    server: Mutex<Option<Child>>,
}

fn spawn(binary: &Path, port: u16, dir: &Path) -> anyhow::Result<Child> {
    Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))
}

async fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nats-server did not listen on {port} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) async fn harness() -> anyhow::Result<Arc<dyn Harness>> {
    let binary = server().map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("a free port")?.port();
    let child = spawn(&binary, port, dir.path())?;
    // Built before the wait, so that its `Drop` kills a server that never comes up.
    let harness = NatsHarness { binary, dir, port, server: Mutex::new(Some(child)) };
    wait_listening(port).await?;
    Ok(Arc::new(harness))
}

#[async_trait::async_trait]
impl Harness for NatsHarness {
    fn name(&self) -> &str {
        "nats"
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        Ok(Arc::new(NatsBackend::connect(&format!("nats://127.0.0.1:{}", self.port)).await?))
    }

    async fn restart_broker(&self) -> anyhow::Result<()> {
        let mut server = self.server.lock().await;
        if let Some(mut old) = server.take() {
            // A crash, not a shutdown: what was acknowledged must survive it.
            let _ = old.kill();
            let _ = old.wait();
        }
        *server = Some(spawn(&self.binary, self.port, self.dir.path())?);
        wait_listening(self.port).await?;
        Ok(())
    }

    async fn shutdown(&self) {
        if let Some(mut child) = self.server.lock().await.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsHarness {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.get_mut().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
