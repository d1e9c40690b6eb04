//! RabbitMQ at 127.0.0.1:5672 (guest/guest), which `.ci/run` makes sure is running;
//! `SWITCHBOARD_TEST_RABBITMQ` (`host:port`) points the suite at another one, as it does every
//! test of the workspace (`switchboard-testkit`). Every case uses its
//! own topic names, so the cases share the one broker. When it is not reachable (a laptop
//! without RabbitMQ) the amqp trials are listed as ignored, unless `CI` is set.
//!
//! Each case reaches RabbitMQ through its own TCP proxy. Restarting the shared RabbitMQ would
//! cut every case running beside it, so a "restart" here is what a restart looks like from
//! the client: the proxy drops every connection and refuses new ones for a moment. RabbitMQ's
//! own durability across a real restart (quorum queues, streams) is RabbitMQ's to prove.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_amqp::AmqpBackend;
use switchboard_conformance::{Harness, Target};
use switchboard_core::backend::Backend;
use switchboard_testkit::Service;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn rabbitmq_addr() -> String {
    Service::RabbitMq.addr().to_string()
}

/// RabbitMQ's declared capabilities are the backend's own.
pub(crate) fn target() -> Target {
    let reachable = switchboard_testkit::find(Service::RabbitMq).map(drop).map_err(|m| m.to_string());
    Target::new("amqp", AmqpBackend::CAPABILITIES, harness)
        .with_restart()
        .needs_service("no RabbitMQ", reachable)
}

struct AmqpHarness {
    /// RabbitMQ's address, which the proxy forwards to.
    upstream: String,
    port: u16,
    /// Bumped to drop every open connection.
    cut: watch::Sender<u64>,
    /// While true, new connections are closed at once (the broker is "down").
    down: Arc<watch::Sender<bool>>,
}

pub(crate) async fn harness() -> anyhow::Result<Arc<dyn Harness>> {
    let upstream = rabbitmq_addr();
    let listener = TcpListener::bind("127.0.0.1:0").await.context("a proxy port")?;
    let port = listener.local_addr().context("the proxy's address")?.port();
    let cut = watch::channel(0u64).0;
    let down = Arc::new(watch::channel(false).0);
    let (c, d, proxied) = (cut.clone(), down.clone(), upstream.clone());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if *d.borrow() {
                continue; // dropped: connection refused, as by a broker that is restarting
            }
            let mut cut = c.subscribe();
            let upstream = proxied.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
            });
        }
    });
    Ok(Arc::new(AmqpHarness { upstream, port, cut, down }))
}

#[async_trait::async_trait]
impl Harness for AmqpHarness {
    fn name(&self) -> &str {
        "amqp"
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port);
        let backend = AmqpBackend::connect(&url)
            .await
            .with_context(|| format!("RabbitMQ at {} (through this case's proxy)", self.upstream))?;
        Ok(Arc::new(backend))
    }

    async fn restart_broker(&self) -> anyhow::Result<()> {
        self.down.send_replace(true);
        self.cut.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.down.send_replace(false);
        Ok(())
    }
}
