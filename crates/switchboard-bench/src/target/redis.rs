//! Redis Streams through redis-rs: XADD per message (pipelined on a multiplexed
//! connection), consumer groups with XREADGROUP and XACK of each message's id.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::{Confirm, Consumer, Durability, Publisher, Received, Shape, Target, within};

/// A Redis server: the machine's (memory only), or a private one this run starts with
/// `appendfsync always`.
pub(crate) struct Redis {
    name: String,
    client: redis::Client,
    conn: MultiplexedConnection,
    /// The private server, killed with the target.
    private: Option<(tokio::process::Child, tempfile::TempDir)>,
}

impl Redis {
    pub(crate) async fn connect(
        name: &str,
        url: &str,
        private: Option<(tokio::process::Child, tempfile::TempDir)>,
    ) -> Result<Box<dyn Target>> {
        let client = redis::Client::open(url)?;
        let conn = within("connecting to Redis", async {
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| anyhow!("{url} is not reachable: {e}"))
        })
        .await?;
        Ok(Box::new(Redis { name: name.to_owned(), client, conn, private }))
    }

    /// Starts `redis-server` on a free loopback port with the append-only file fsynced
    /// before every reply (`appendfsync always`): the setting equal to Switchboard's default.
    pub(crate) async fn start_private(bin: &str) -> Result<Box<dyn Target>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
        let child = tokio::process::Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("{bin} could not be started"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("{bin} did not listen on port {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self::connect("redis-streams-fsync", &url, Some((child, dir))).await
    }

    fn group(i: usize) -> String {
        format!("sub-{i}")
    }
}

#[async_trait]
impl Target for Redis {
    fn name(&self) -> &str {
        &self.name
    }

    fn durability(&self) -> Durability {
        if self.private.is_some() { Durability::FsyncBeforeAck } else { Durability::NoFsync }
    }

    fn setup(&self) -> String {
        let persistence = if self.private.is_some() {
            "private redis-server, appendonly yes, appendfsync always"
        } else {
            "the machine's redis-server, no persistence (memory only)"
        };
        format!(
            "{persistence}; XADD per message, XREADGROUP COUNT prefetch + XACK of the ids read, XREAD from 0 for replay"
        )
    }

    fn supports(&self, _: Shape) -> bool {
        true
    }

    async fn create(&self, topic: &str, shape: Shape) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = redis::cmd("DEL").arg(topic).query_async(&mut c).await?;
        if let Shape::Queue { subscriptions } = shape {
            for i in 0..subscriptions {
                let _: () = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(topic)
                    .arg(Self::group(i))
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut c)
                    .await?;
            }
        }
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Box<dyn Publisher>> {
        Ok(Box::new(RedisPublisher { conn: self.conn.clone(), key: topic.to_owned() }))
    }

    async fn consumer(&self, topic: &str, subscription: usize, prefetch: u32) -> Result<Box<dyn Consumer>> {
        // A connection of its own: a blocking read holds up everything queued behind it.
        let conn = self.client.get_multiplexed_async_connection().await?;
        Ok(Box::new(RedisConsumer {
            conn,
            key: topic.to_owned(),
            read: Read::Group { group: Self::group(subscription), name: switchboard_core::new_message_id() },
            count: prefetch as usize,
        }))
    }

    async fn reader(&self, topic: &str) -> Result<Box<dyn Consumer>> {
        let conn = self.client.get_multiplexed_async_connection().await?;
        Ok(Box::new(RedisConsumer { conn, key: topic.to_owned(), read: Read::From("0".into()), count: 1000 }))
    }

    async fn delete(&self, topic: &str, _: Shape) -> Result<()> {
        let _: () = redis::cmd("DEL").arg(topic).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}

struct RedisPublisher {
    conn: MultiplexedConnection,
    key: String,
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn send(&mut self, payload: Bytes) -> Result<Confirm> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.key).arg("*").arg("d").arg(payload.as_ref());
        Ok(Box::pin(async move {
            let _: String = cmd.query_async(&mut c).await?;
            Ok(())
        }))
    }
}

enum Read {
    /// XREADGROUP as consumer `name` of `group`, then XACK.
    Group { group: String, name: String },
    /// XREAD after this id (a reader keeps its own position).
    From(String),
}

struct RedisConsumer {
    conn: MultiplexedConnection,
    key: String,
    read: Read,
    count: usize,
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn next(&mut self, wait: Duration) -> Result<Received> {
        let deadline = Instant::now() + wait;
        loop {
            // Short blocks: the multiplexed connection times out replies that take too long.
            let block = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            let mut cmd = match &self.read {
                Read::Group { group, name } => {
                    let mut c = redis::cmd("XREADGROUP");
                    c.arg("GROUP").arg(group).arg(name);
                    c
                }
                Read::From(_) => redis::cmd("XREAD"),
            };
            cmd.arg("COUNT").arg(self.count).arg("BLOCK").arg(block.as_millis().max(1) as u64);
            cmd.arg("STREAMS").arg(&self.key);
            match &self.read {
                Read::Group { .. } => cmd.arg(">"),
                Read::From(id) => cmd.arg(id),
            };
            let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn).await?;
            let at = Instant::now();
            let entries =
                reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>()).unwrap_or_default();
            if entries.is_empty() {
                if Instant::now() >= deadline {
                    return Ok(Received { at, payloads: Vec::new() });
                }
                continue;
            }
            let mut payloads = Vec::with_capacity(entries.len());
            for e in &entries {
                match e.map.get("d") {
                    Some(redis::Value::BulkString(b)) => payloads.push(Bytes::copy_from_slice(b)),
                    other => bail!("entry {} has no payload field: {other:?}", e.id),
                }
            }
            match &mut self.read {
                Read::Group { group, .. } => {
                    let mut ack = redis::cmd("XACK");
                    ack.arg(&self.key).arg(group.as_str());
                    for e in &entries {
                        ack.arg(&e.id);
                    }
                    let _: u64 = ack.query_async(&mut self.conn).await?;
                }
                Read::From(id) => {
                    if let Some(last) = entries.last() {
                        *id = last.id.clone();
                    }
                }
            }
            return Ok(Received { at, payloads });
        }
    }
}
