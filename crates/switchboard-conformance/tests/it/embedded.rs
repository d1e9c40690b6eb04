//! The embedded broker on a temporary data directory (fsync always), one per case. A
//! restart closes the broker and opens the directory again.

use std::sync::Arc;

use anyhow::Context;
use switchboard::embedded::EmbeddedBackend;
use switchboard_conformance::Harness;
use switchboard_core::backend::Backend;
use tokio::sync::Mutex;

struct EmbeddedHarness {
    dir: tempfile::TempDir,
    /// `None` after shutdown; the lock is held across a restart, so `connect` waits for it.
    current: Mutex<Option<Arc<EmbeddedBackend>>>,
}

pub(crate) async fn harness() -> Arc<dyn Harness> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let backend = EmbeddedBackend::open(dir.path()).await.expect("open the embedded broker");
    Arc::new(EmbeddedHarness { dir, current: Mutex::new(Some(Arc::new(backend))) })
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

    async fn restart_broker(&self) -> anyhow::Result<bool> {
        let mut current = self.current.lock().await;
        if let Some(old) = current.take() {
            old.close().await.context("close the broker")?;
        }
        let reopened = EmbeddedBackend::open(self.dir.path()).await.context("reopen the broker")?;
        *current = Some(Arc::new(reopened));
        Ok(true)
    }

    async fn shutdown(&self) {
        if let Some(backend) = self.current.lock().await.take() {
            let _ = backend.close().await;
        }
    }
}

switchboard_conformance::conformance_tests!(harness);
