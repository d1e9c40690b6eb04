//! Dropped connections: a TCP proxy in front of RabbitMQ cuts every connection, as a broker
//! restart or a network failure would, or freezes them (the sockets stay open, nothing is
//! forwarded), as a broker that stops answering would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::TopicName;
use switchboard_core::backend::{Publisher, Subscriber};
use switchboard_core::contract::{
    BusError, LeaseLostCause, PublishOptions, SubscriptionSpec, dead_letter_ext,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::*;

/// Forwards 127.0.0.1:<port> to RabbitMQ until `cut` drops every open connection or `freeze`
/// stops forwarding on them while keeping them open.
struct Proxy {
    port: u16,
    kill: Arc<watch::Sender<u64>>,
    frozen: Arc<watch::Sender<bool>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let kill = Arc::new(watch::channel(0u64).0);
        let frozen = Arc::new(watch::channel(false).0);
        let (k, f) = (kill.clone(), frozen.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = k.subscribe();
                let mut freeze = f.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        TcpStream::connect(switchboard_testkit::Service::RabbitMq.addr()).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                        _ = async { freeze.wait_for(|f| *f).await.is_ok() } => {
                            // Keep both sockets open and silent until cut.
                            let _ = cut.changed().await;
                        }
                    }
                });
            }
        });
        Proxy { port, kill, frozen }
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn cut(&self) {
        self.kill.send_modify(|n| *n += 1);
    }
}

/// Publishes, retrying retryable errors for a while (the first call after a drop fails).
async fn publish_retrying(bus: &AmqpBackend, topic: &TopicName, m: switchboard_core::Message) {
    for _ in 0..50 {
        match bus.publish(topic, vec![m.clone()], &PublishOptions::default()).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("not retryable: {e:?}"),
        }
    }
    panic!("publish never succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_dropped_connection() {
    require_service!(RabbitMq);
    let proxy = Proxy::start().await;
    let bus = AmqpBackend::connect(&proxy.url()).await.unwrap();
    let t = unique_topic("reconnect");
    let spec = SubscriptionSpec::queue(sub("w")).with_max_deliveries(None);
    let mut s = bus.subscribe(&t, spec).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    let held = next(&mut s, WAIT).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = held.ack().await.unwrap_err();
    assert!(matches!(e, BusError::LeaseLost { cause: LeaseLostCause::ConnectionLost, .. }), "{e:?}");
    publish_retrying(&bus, &t, msg(2)).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = next(&mut s, WAIT).await;
        seen.push((body(&d), d.info().attempt));
        d.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, vec![("1".to_owned(), 2), ("2".to_owned(), 1)]);
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dying_on_the_last_delivery_dead_letters_it() {
    require_service!(RabbitMq);
    let proxy = Proxy::start().await;
    let bus = AmqpBackend::connect(&proxy.url()).await.unwrap();
    let t = unique_topic("death");
    let dlq = TopicName::new(format!("{t}.w.dlq")).unwrap();
    let mut s =
        bus.subscribe(&t, SubscriptionSpec::queue(sub("w")).with_max_deliveries(Some(1))).await.unwrap();
    let watcher = super::bus().await;
    let mut dead = watcher.subscribe(&dlq, SubscriptionSpec::queue(sub("audit"))).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    let held = next(&mut s, WAIT).await;
    proxy.cut();
    let d = next(&mut dead, WAIT).await;
    assert_eq!(d.message().extensions[dead_letter_ext::REASON], "lease expired");
    assert_eq!(d.message().extensions[dead_letter_ext::ATTEMPTS], "1");
    d.ack().await.unwrap();
    drop(held);
    assert!(next_within(&mut s, Duration::from_millis(500)).await.is_none());
    s.close().await.unwrap();
    dead.close().await.unwrap();
    let _ = bus.close().await;
    cleanup(&watcher, &[&t, &dlq], &[(&t, "w"), (&dlq, "audit")]).await;
}

/// A broker that stops answering on a live connection (no RST, no FIN) must not make any call
/// wait forever: each fails with a retryable error within the documented bounds
/// (`RPC_TIMEOUT` = 10 s for requests, `CLOSE_TIMEOUT` = 5 s for closing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_answering_gives_retryable_errors_in_bounded_time() {
    require_service!(RabbitMq);
    let proxy = Proxy::start().await;
    let bus = AmqpBackend::connect(&proxy.url()).await.unwrap();
    let t = unique_topic("silent");
    let s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w")).with_max_deliveries(None)).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    proxy.freeze();
    let bound = Duration::from_secs(13);

    // A publish waits for a confirm that never comes.
    let started = Instant::now();
    let e = bus.publish(&t, vec![msg(2)], &PublishOptions::default()).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(started.elapsed() < bound, "publish took {:?}", started.elapsed());

    // A request needing a new channel on the silent connection.
    let started = Instant::now();
    let e = bus.stats(&t, &sub("w")).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(started.elapsed() < bound, "stats took {:?}", started.elapsed());

    // Closing the subscription and the backend do not wait for close-oks that never come.
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.close())
        .await
        .expect("closing the subscription hung");
    let _ =
        tokio::time::timeout(Duration::from_secs(30), bus.close()).await.expect("closing the backend hung");
    assert!(started.elapsed() < Duration::from_secs(20), "closing took {:?}", started.elapsed());
    proxy.cut();
    cleanup(&super::bus().await, &[&t], &[(&t, "w")]).await;
}
