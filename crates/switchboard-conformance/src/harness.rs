//! What a backend's test module provides: connections to one broker, a way to restart it, and
//! how patient the suite should be with it.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::backend::Backend;

/// How long the suite waits, and the short lease it uses where lease expiry is tested. No case
/// fails on speed: `wait` bounds what must happen, `quiet` is how long the suite watches for
/// what must not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Longest wait for anything that must happen (a delivery, a publish, a close, stats).
    pub wait: Duration,
    /// How long to watch for something that must not happen (an extra or early delivery).
    pub quiet: Duration,
    /// The lease used by the cases that let leases run out.
    pub short_lease: Duration,
    /// How far the broker's clock may be from the test's, for "not before" checks.
    pub clock_slack: Duration,
    /// Longest a whole case may run before it counts as hung.
    pub case_limit: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            wait: Duration::from_secs(15),
            quiet: Duration::from_millis(400),
            short_lease: Duration::from_millis(500),
            clock_slack: Duration::from_millis(25),
            case_limit: Duration::from_secs(120),
        }
    }
}

/// One backend under test: the suite asks it for connections to one broker.
///
/// Each case gets its own harness (from the function given to [`Target::new`](crate::Target::new))
/// and uses unique topic and subscription names, so cases may share a broker and run in
/// parallel. What the backend can do is declared on the [`Target`](crate::Target), before any
/// harness is built, so `cargo test` can list the cases it cannot run as ignored.
#[async_trait::async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's name in reports (`embedded`, `switchboard`, `amqp`, `nats`).
    fn name(&self) -> &str;

    /// A new connection (handle) to the broker under test. A backend with no connections of its
    /// own (the embedded broker) may return the same instance every time; after
    /// [`restart_broker`](Harness::restart_broker) it returns one that reaches the restarted
    /// broker.
    ///
    /// # Errors
    /// The broker cannot be reached.
    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>>;

    /// Restarts the broker, keeping its data. Connections made before may be dead
    /// afterwards; the cases connect again. Only called on a harness whose
    /// [`Target`](crate::Target) says [`with_restart`](crate::Target::with_restart); the
    /// default refuses.
    ///
    /// # Errors
    /// The restart failed, or this harness cannot restart its broker.
    async fn restart_broker(&self) -> anyhow::Result<()> {
        anyhow::bail!("the {} harness cannot restart its broker", self.name())
    }

    /// How patient the suite is with this backend.
    fn timing(&self) -> Timing {
        Timing::default()
    }

    /// Called once after each case, passed or failed: close connections, stop what the harness
    /// started.
    async fn shutdown(&self) {}
}
