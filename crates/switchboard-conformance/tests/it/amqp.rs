//! RabbitMQ at 127.0.0.1:5672 (guest/guest), which `.ci/run` makes sure is running. Every
//! case uses its own topic names, so the cases share the one broker.
//!
//! Each case reaches RabbitMQ through its own TCP proxy. Restarting the shared RabbitMQ would
//! cut every case running beside it, so a "restart" here is what a restart looks like from
//! the client: the proxy drops every connection and refuses new ones for a moment. RabbitMQ's
//! own durability across a real restart (quorum queues, streams) is RabbitMQ's to prove.

use std::sync::Arc;
use std::time::Duration;

use switchboard_amqp::AmqpBackend;
use switchboard_conformance::Harness;
use switchboard_core::backend::Backend;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct AmqpHarness {
    port: u16,
    /// Bumped to drop every open connection.
    cut: watch::Sender<u64>,
    /// While true, new connections are closed at once (the broker is "down").
    down: Arc<watch::Sender<bool>>,
}

pub(crate) async fn harness() -> Arc<dyn Harness> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a proxy port");
    let port = listener.local_addr().expect("address").port();
    let cut = watch::channel(0u64).0;
    let down = Arc::new(watch::channel(false).0);
    let (c, d) = (cut.clone(), down.clone());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if *d.borrow() {
                continue; // dropped: connection refused, as by a broker that is restarting
            }
            let mut cut = c.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5672").await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
            });
        }
    });
    Arc::new(AmqpHarness { port, cut, down })
}

#[async_trait::async_trait]
impl Harness for AmqpHarness {
    fn name(&self) -> &str {
        "amqp"
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        Ok(Arc::new(AmqpBackend::connect(&format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)).await?))
    }

    async fn restart_broker(&self) -> anyhow::Result<bool> {
        self.down.send_replace(true);
        self.cut.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.down.send_replace(false);
        Ok(true)
    }
}

switchboard_conformance::conformance_tests!(harness);
