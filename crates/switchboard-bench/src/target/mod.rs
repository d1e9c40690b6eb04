//! What the scenarios drive: a broker reached through its own best client.
//!
//! Every target speaks its native protocol with the client a user of that broker would pick
//! (lapin, async-nats, redis-rs, Switchboard's gRPC or in-process API), publishes one message
//! per send with a window of unconfirmed sends, and acks every message by its own id. What a
//! target's durability is, is stated with every figure.

mod embedded;
mod nats;
mod rabbitmq;
mod redis;
mod sdk;
mod serve;

use std::time::{Duration, Instant};

use anyhow::Result;
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Serialize;

pub(crate) use serve::ServeProcess;

/// When a target acknowledges a publish, as far as losing it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Durability {
    /// The publish is on disk (fsync) before it is acknowledged.
    FsyncBeforeAck,
    /// The publish is acknowledged once written to the OS or kept in memory; a power cut can
    /// lose it.
    NoFsync,
}

impl Durability {
    /// Short words for tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Durability::FsyncBeforeAck => "fsync before ack",
            Durability::NoFsync => "no fsync before ack",
        }
    }
}

/// What a scenario asks a target to create.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    /// A topic with this many queue subscriptions (competing consumers each; every
    /// subscription gets every message).
    Queue { subscriptions: usize },
    /// A retained log read from the beginning by a fresh reader.
    Log,
}

/// The wait for one publish's confirmation.
pub(crate) type Confirm = BoxFuture<'static, Result<()>>;

/// Publishes one message at a time, in order.
#[async_trait]
pub(crate) trait Publisher: Send {
    /// Sends one message and returns the wait for its confirmation; the next send may start
    /// before this confirmation arrives.
    async fn send(&mut self, payload: Bytes) -> Result<Confirm>;
}

/// Payloads that arrived together, and when.
pub(crate) struct Received {
    /// When the consumer had them, before acking.
    pub(crate) at: Instant,
    /// The message bodies.
    pub(crate) payloads: Vec<Bytes>,
}

/// Receives and settles messages.
#[async_trait]
pub(crate) trait Consumer: Send {
    /// Waits up to `wait` for messages, acks (queues) or commits (logs) each of them, and
    /// returns them; an empty answer means none came in time.
    async fn next(&mut self, wait: Duration) -> Result<Received>;
}

/// A broker under test.
#[async_trait]
pub(crate) trait Target: Send + Sync {
    /// Its name in tables (`rabbitmq-quorum`).
    fn name(&self) -> &str;
    /// How durable its acknowledged publishes are, as configured.
    fn durability(&self) -> Durability;
    /// One line on how it is set up (queue type, storage, fsync setting).
    fn setup(&self) -> String;
    /// Whether it runs scenarios of this shape (a RabbitMQ stream is not a queue).
    fn supports(&self, shape: Shape) -> bool;
    /// Creates `topic`, fresh, shaped for a scenario.
    async fn create(&self, topic: &str, shape: Shape) -> Result<()>;
    /// A publisher to `topic`.
    async fn publisher(&self, topic: &str) -> Result<Box<dyn Publisher>>;
    /// A consumer of queue subscription number `subscription` of `topic`, holding at most
    /// `prefetch` unacked messages.
    async fn consumer(&self, topic: &str, subscription: usize, prefetch: u32) -> Result<Box<dyn Consumer>>;
    /// A fresh reader of a [`Shape::Log`] topic from its first message.
    async fn reader(&self, topic: &str) -> Result<Box<dyn Consumer>>;
    /// Deletes `topic` and whatever was made for it.
    async fn delete(&self, topic: &str, shape: Shape) -> Result<()>;
    /// The process id of a server this run started for the target (the `switchboard serve`
    /// targets share one, but run one after another), whose CPU time during the target's runs
    /// is then its cost; `None` for the machine's shared brokers and in-process targets.
    fn server_pid(&self) -> Option<u32> {
        None
    }
    /// The broker's stage histograms so far, for targets that are Switchboard.
    async fn stages(&self) -> Result<Option<Vec<switchboard_broker::StageSnapshot>>> {
        Ok(None)
    }
}

/// The targets this run can reach, and a line for each that it cannot.
pub(crate) struct Reachable {
    /// Targets to run, in table order.
    pub(crate) targets: Vec<Box<dyn Target>>,
    /// `name: why it was skipped`.
    pub(crate) skipped: Vec<String>,
    /// Servers this run started, kept alive while the targets run and stopped when dropped.
    pub(crate) _servers: Vec<ServeProcess>,
}

/// Where the peers are, and which targets the user asked for.
pub(crate) struct Endpoints {
    /// `amqp://…` of RabbitMQ.
    pub(crate) amqp: String,
    /// `nats://…` of a NATS server with JetStream.
    pub(crate) nats: String,
    /// `redis://…` of the machine's Redis.
    pub(crate) redis: String,
    /// The `redis-server` program, to start a private Redis with `appendfsync always`.
    pub(crate) redis_server_bin: String,
    /// The `switchboard` binary.
    pub(crate) switchboard_bin: std::path::PathBuf,
    /// Only these targets (by name); all when empty.
    pub(crate) only: Vec<String>,
}

/// Every target name, in table order.
pub(crate) const ALL: &[&str] = &[
    "switchboard-embedded",
    "switchboard-serve",
    "switchboard-serve-nofsync",
    "switchboard-sdk",
    "rabbitmq-classic",
    "rabbitmq-quorum",
    "rabbitmq-stream",
    "nats-jetstream",
    "redis-streams",
    "redis-streams-fsync",
];

/// Connects to every target asked for, skipping (with a reason) those not reachable.
pub(crate) async fn reach(endpoints: &Endpoints) -> Reachable {
    let wanted = |name: &str| endpoints.only.is_empty() || endpoints.only.iter().any(|o| o == name);
    let mut out = Reachable { targets: Vec::new(), skipped: Vec::new(), _servers: Vec::new() };
    let add = |name: &str, made: Result<Box<dyn Target>>, out: &mut Reachable| match made {
        Ok(t) => out.targets.push(t),
        Err(e) => out.skipped.push(format!("{name}: skipped, {e:#}")),
    };
    if wanted("switchboard-embedded") {
        add("switchboard-embedded", embedded::Embedded::open().await, &mut out);
    }
    let served = ["switchboard-serve", "switchboard-serve-nofsync", "switchboard-sdk"];
    if served.iter().any(|name| wanted(name)) {
        match ServeProcess::start(&endpoints.switchboard_bin).await {
            Ok(process) => {
                for (name, fsync) in [("switchboard-serve", true), ("switchboard-serve-nofsync", false)] {
                    if wanted(name) {
                        add(name, serve::Serve::connect(name, &process, fsync).await, &mut out);
                    }
                }
                if wanted("switchboard-sdk") {
                    let sdk = match serve::Serve::connect("switchboard-sdk", &process, true).await {
                        Ok(serve) => sdk::Sdk::connect(serve, process.grpc).await,
                        Err(e) => Err(e),
                    };
                    add("switchboard-sdk", sdk, &mut out);
                }
                out._servers.push(process);
            }
            Err(e) => {
                for name in served {
                    if wanted(name) {
                        out.skipped.push(format!("{name}: skipped, {e:#}"));
                    }
                }
            }
        }
    }
    for kind in [rabbitmq::Kind::Classic, rabbitmq::Kind::Quorum, rabbitmq::Kind::Stream] {
        if wanted(kind.name()) {
            add(kind.name(), rabbitmq::RabbitMq::connect(&endpoints.amqp, kind).await, &mut out);
        }
    }
    if wanted("nats-jetstream") {
        add("nats-jetstream", nats::Nats::connect(&endpoints.nats).await, &mut out);
    }
    if wanted("redis-streams") {
        add("redis-streams", redis::Redis::connect("redis-streams", &endpoints.redis, None).await, &mut out);
    }
    if wanted("redis-streams-fsync") {
        add("redis-streams-fsync", redis::Redis::start_private(&endpoints.redis_server_bin).await, &mut out);
    }
    out
}

/// Waits up to `wait` for a first item of a push-style consumer, then takes whatever else
/// has already arrived, up to `max` in all; `None` when nothing came in time. Also returns
/// when the first one arrived.
pub(crate) async fn first_then_ready<S, T, E>(
    stream: &mut S,
    wait: Duration,
    max: usize,
    what: &str,
) -> Result<Option<(Instant, Vec<T>)>>
where
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    anyhow::Error: From<E>,
{
    use futures::{FutureExt, StreamExt};
    let first = match tokio::time::timeout(wait, stream.next()).await {
        Err(_) => return Ok(None),
        Ok(None) => anyhow::bail!("{what} ended"),
        Ok(Some(item)) => item?,
    };
    let at = Instant::now();
    let mut items = vec![first];
    while items.len() < max {
        match stream.next().now_or_never() {
            Some(Some(item)) => items.push(item?),
            _ => break,
        }
    }
    Ok(Some((at, items)))
}

/// Bounds a setup step, so an unreachable peer is a skip line rather than a hang.
pub(crate) async fn within<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("{what} took over 10 s"),
    }
}
