//! The writer and reader run as processes of their own, so a campaign observes the server
//! the way real clients do: over sockets that break when the server dies.
//!
//! A worker's whole configuration travels in one environment variable as JSON; a
//! [`Launcher`] says which program to run. The campaign binary runs itself with a hidden
//! subcommand; a test harness can run its own test binary (see switchboard-cli's tests).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The environment variable carrying a worker's [`WorkerSpec`].
pub const WORKER_ENV: &str = "SWITCHBOARD_CAMPAIGN_WORKER";

/// Which worker a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes sequence-numbered messages and records every receipt.
    Writer,
    /// Consumes every subscription and records deliveries and confirmed settles.
    Reader,
}

/// How a subscription is consumed, and what order it promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubKind {
    /// A plain queue: competing consumers, no order promised.
    Queue,
    /// A queue ordered by key: one message of a key in flight, so order per key.
    OrderedQueue,
    /// A stream: order per partition, so per key (a key maps to one partition).
    Stream,
}

impl SubKind {
    /// Whether the broker promises that first deliveries of a key come in publish order
    /// (DESIGN.md §2: order per partition for streams, per key for ordered queues; a plain
    /// queue lets any member get any message).
    pub fn order_promised(self) -> bool {
        !matches!(self, SubKind::Queue)
    }
}

/// Everything a worker process needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Writer or reader.
    pub role: Role,
    /// The server's gRPC address (fixed across restarts).
    pub grpc: SocketAddr,
    /// The topic.
    pub topic: String,
    /// Reader: the subscriptions and how to consume each.
    pub subscriptions: Vec<(String, SubKind)>,
    /// Writer: how many keys publish concurrently (each sequentially).
    pub keys: u32,
    /// Writer: messages per second over all keys.
    pub rate: u32,
    /// Reader: how long to drain after being told to stop, ms.
    pub drain_ms: u64,
    /// Where to write the event log.
    pub events: PathBuf,
}

impl WorkerSpec {
    /// The spec this process was started with as a worker, or `None` if it was not.
    ///
    /// # Errors
    /// The variable is set but is not a valid spec.
    pub fn from_env() -> Option<anyhow::Result<WorkerSpec>> {
        let raw = std::env::var_os(WORKER_ENV)?;
        Some(
            raw.into_string()
                .map_err(|_| anyhow::anyhow!("{WORKER_ENV} is not UTF-8"))
                .and_then(|s| serde_json::from_str(&s).context("parsing the worker spec")),
        )
    }

    /// Runs this worker until its stdin closes (the campaign's signal to stop), then
    /// finishes: the writer completes its publish in progress, the reader drains.
    ///
    /// # Errors
    /// The event log cannot be written, or a worker task failed.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.role {
            Role::Writer => super::writer::run(&self).await,
            Role::Reader => super::reader::run(&self).await,
        }
    }
}

/// How to start a worker process: a program and its arguments per role. The spec is added
/// as the environment variable [`WORKER_ENV`].
#[derive(Clone)]
pub struct Launcher {
    program: PathBuf,
    args: Arc<dyn Fn(Role) -> Vec<OsString> + Send + Sync>,
}

impl Launcher {
    /// A launcher for any program.
    pub fn new(program: PathBuf, args: impl Fn(Role) -> Vec<OsString> + Send + Sync + 'static) -> Self {
        Launcher { program, args: Arc::new(args) }
    }

    /// The running campaign binary, with its hidden `crash-writer` / `crash-reader`
    /// subcommands.
    ///
    /// # Errors
    /// The path of the current executable is unknown.
    pub fn current_exe() -> anyhow::Result<Launcher> {
        let program = std::env::current_exe().context("finding the current executable")?;
        Ok(Launcher::new(program, |role| {
            vec![match role {
                Role::Writer => "crash-writer".into(),
                Role::Reader => "crash-reader".into(),
            }]
        }))
    }

    pub(crate) fn command(&self, spec: &WorkerSpec) -> anyhow::Result<tokio::process::Command> {
        let mut c = tokio::process::Command::new(&self.program);
        c.args((self.args)(spec.role))
            .env(WORKER_ENV, serde_json::to_string(spec).context("encoding the worker spec")?)
            // Stdout stays out of the campaign's own output (a test harness prints there);
            // events go to the spec's file and errors to stderr.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        Ok(c)
    }
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher").field("program", &self.program).finish_non_exhaustive()
    }
}

/// Resolves when the campaign closes this process's stdin: the signal to stop.
pub(crate) fn stop_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(true);
    });
    rx
}
