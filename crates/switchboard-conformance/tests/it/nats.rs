//! NATS JetStream: each case gets its own `nats-server` process (the machine's 2.9 binary, the
//! same as the service on 127.0.0.1:4222) on a free loopback port with its own store, so a
//! case can restart its broker (SIGKILL, then start again on the same port and store)
//! without disturbing the cases running beside it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_conformance::Harness;
use switchboard_core::backend::Backend;
use switchboard_nats::NatsBackend;
use tokio::sync::Mutex;

const SERVER: &str = "/usr/sbin/nats-server";

struct NatsHarness {
    dir: tempfile::TempDir,
    port: u16,
    server: Mutex<Option<Child>>,
}

fn spawn(port: u16, dir: &std::path::Path) -> anyhow::Result<Child> {
    Command::new(SERVER)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {SERVER}"))
}

async fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nats-server did not listen on {port} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) async fn harness() -> Arc<dyn Harness> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let child = spawn(port, dir.path()).expect("nats-server");
    wait_listening(port).await.expect("nats-server up");
    Arc::new(NatsHarness { dir, port, server: Mutex::new(Some(child)) })
}

#[async_trait::async_trait]
impl Harness for NatsHarness {
    fn name(&self) -> &str {
        "nats"
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        Ok(Arc::new(NatsBackend::connect(&format!("nats://127.0.0.1:{}", self.port)).await?))
    }

    async fn restart_broker(&self) -> anyhow::Result<bool> {
        let mut server = self.server.lock().await;
        if let Some(mut old) = server.take() {
            // A crash, not a shutdown: what was acknowledged must survive it.
            let _ = old.kill();
            let _ = old.wait();
        }
        *server = Some(spawn(self.port, self.dir.path())?);
        wait_listening(self.port).await?;
        Ok(true)
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

switchboard_conformance::conformance_tests!(harness);
