//! The embedded broker on a temporary data directory (fsync always), one per case. A
//! restart closes the broker and opens the directory again.

use std::sync::Arc;

use anyhow::Context;
use switchboard::embedded::EmbeddedBackend;
use switchboard_conformance::{Harness, Target};
use switchboard_core::backend::Backend;
use switchboard_core::contract::Capabilities;
use tokio::sync::Mutex;

struct EmbeddedHarness {
    dir: tempfile::TempDir,
    /// `None` after shutdown; the lock is held across a restart, so `connect` waits for it.
    current: Mutex<Option<Arc<EmbeddedBackend>>>,
}

/// On a data directory the embedded broker has every capability, persistence included.
pub(crate) fn target() -> Target {
    Target::new("embedded", Capabilities::ALL, harness).with_restart()
}

pub(crate) async fn harness() -> anyhow::Result<Arc<dyn Harness>> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let backend = EmbeddedBackend::open(dir.path()).await.context("open the embedded broker")?;
    Ok(Arc::new(EmbeddedHarness { dir, current: Mutex::new(Some(Arc::new(backend))) }))
}

#[async_trait::async_trait]
impl Harness for EmbeddedHarness {
    fn name(&self) -> &str {
        "embedded"
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        let current = self.current.lock().await;
        let backend = current.as_ref().context("the harness was shut down")?.clone();
        Ok(backend)
    }

    async fn restart_broker(&self) -> anyhow::Result<()> {
        let mut current = self.current.lock().await;
        if let Some(old) = current.take() {
            old.close().await.context("close the broker")?;
        }
        let reopened = EmbeddedBackend::open(self.dir.path()).await.context("reopen the broker")?;
        *current = Some(Arc::new(reopened));
        Ok(())
    }

    async fn shutdown(&self) {
        if let Some(backend) = self.current.lock().await.take() {
            let _ = backend.close().await;
        }
    }
}
