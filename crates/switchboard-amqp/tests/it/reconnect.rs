//! Dropped connections: a TCP proxy in front of RabbitMQ cuts every connection, as a broker
//! restart or a network failure would.

#[allow(unused_imports)] use switchboard_amqp::wd::Wd;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::TopicName;
use switchboard_core::contract::{
    BusError, PublishOptions, Publisher, Subscriber, SubscriptionSpec, dead_letter_ext,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::*;

/// Forwards 127.0.0.1:<port> to RabbitMQ until `cut` drops every open connection.
struct Proxy {
    port: u16,
    kill: Arc<watch::Sender<u64>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").wd(concat!(file!(), ":", line!())).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let kill = Arc::new(watch::channel(0u64).0);
        let k = kill.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().wd(concat!(file!(), ":", line!())).await {
                let mut cut = k.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5672").wd(concat!(file!(), ":", line!())).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { port, kill }
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
        match bus.publish(topic, vec![m.clone()], &PublishOptions::default()).wd(concat!(file!(), ":", line!())).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).wd(concat!(file!(), ":", line!())).await,
            Err(e) => panic!("not retryable: {e:?}"),
        }
    }
    panic!("publish never succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_dropped_connection() {
    let proxy = Proxy::start().wd(concat!(file!(), ":", line!())).await;
    let bus = AmqpBackend::connect(&proxy.url()).wd(concat!(file!(), ":", line!())).await.unwrap();
    let t = unique("reconnect");
    let spec = SubscriptionSpec::queue(sub("w")).max_deliveries(None);
    let mut s = bus.subscribe(&t, spec).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).wd(concat!(file!(), ":", line!())).await;
    let held = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).wd(concat!(file!(), ":", line!())).await;
    assert!(matches!(held.ack().wd(concat!(file!(), ":", line!())).await, Err(BusError::LeaseLost(_))));
    publish_retrying(&bus, &t, msg(2)).wd(concat!(file!(), ":", line!())).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
        seen.push((body(&d), d.info().attempt));
        d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, vec![("m1".to_owned(), 2), ("m2".to_owned(), 1)]);
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dying_on_the_last_delivery_dead_letters_it() {
    let proxy = Proxy::start().wd(concat!(file!(), ":", line!())).await;
    let bus = AmqpBackend::connect(&proxy.url()).wd(concat!(file!(), ":", line!())).await.unwrap();
    let t = unique("death");
    let dlq = TopicName::new(format!("{t}.w.dlq")).unwrap();
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w")).max_deliveries(Some(1))).wd(concat!(file!(), ":", line!())).await.unwrap();
    let watcher = super::bus().wd(concat!(file!(), ":", line!())).await;
    let mut dead = watcher.subscribe(&dlq, SubscriptionSpec::queue(sub("audit"))).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).wd(concat!(file!(), ":", line!())).await;
    let held = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    proxy.cut();
    let d = next(&mut dead).wd(concat!(file!(), ":", line!())).await;
    assert_eq!(d.message().extensions[dead_letter_ext::REASON], "lease expired");
    assert_eq!(d.message().extensions[dead_letter_ext::ATTEMPTS], "1");
    d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    drop(held);
    assert!(next_within(&mut s, Duration::from_millis(500)).wd(concat!(file!(), ":", line!())).await.is_none());
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    dead.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    let _ = bus.close().wd(concat!(file!(), ":", line!())).await;
    cleanup(&watcher, &[&t, &dlq], &[(&t, "w"), (&dlq, "audit")]).wd(concat!(file!(), ":", line!())).await;
}
