//! gRPC figures of `switchboard serve`, measured against a real server on loopback.
//!
//! `cargo bench -p switchboard-server --bench grpc`
//!
//! Scenarios (1 KiB messages; fsync `always` unless said otherwise; server and clients share
//! this process and its two cores):
//! - publish, batched: 4 clients, each a loop of unary `Publish` calls of 100 events;
//! - publish, unbatched: 8 clients × 64 unary single-event `Publish` calls in flight;
//! - consume + ack: one `Consume` stream (credits 1,000) acking every delivery, draining a
//!   backlog of 100,000 messages;
//! - end-to-end latency at a fixed 2,000 msgs/s: publishes are started at their intended send
//!   times whatever happened to earlier ones, and latency is measured from the intended send
//!   time, so a stall shows up in the tail instead of being hidden (no coordinated omission).
//!
//! Not a test: nothing fails on a figure. Set `SWITCHBOARD_BENCH_SECS` to change durations and
//! `SWITCHBOARD_BENCH_FSYNC=never|interval|always` to see what the fsync policy costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use switchboard_server::proto::io::cloudevents::v1 as ce;
use switchboard_server::proto::switchboard::v1 as pb;
use switchboard_server::{Server, ServerConfig};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

type Client = pb::switchboard_client::SwitchboardClient<Channel>;

// The allocator the `switchboard` binary ships with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn event(i: u64, payload: Vec<u8>) -> ce::CloudEvent {
    ce::CloudEvent {
        id: format!("bench-{i}-{}", switchboard_core::new_message_id()),
        source: "/bench".into(),
        spec_version: "1.0".into(),
        r#type: "bench".into(),
        attributes: Default::default(),
        data: Some(ce::cloud_event::Data::BinaryData(payload.into())),
    }
}

/// The fsync policy of every topic the bench creates.
fn fsync_policy() -> pb::FsyncPolicy {
    match std::env::var("SWITCHBOARD_BENCH_FSYNC").as_deref() {
        Ok("never") => pb::FsyncPolicy::Never,
        Ok("interval") => pb::FsyncPolicy::Interval,
        _ => pb::FsyncPolicy::Always,
    }
}

async fn create_topic(c: &mut Client, name: &str) {
    let fsync = fsync_policy();
    let config = pb::TopicConfig {
        partitions: Some(4),
        fsync: fsync as i32,
        fsync_interval_ms: (fsync == pb::FsyncPolicy::Interval).then_some(5),
        dedup_window_ms: Some(0),
        ..Default::default()
    };
    c.create_topic(pb::CreateTopicRequest { name: name.into(), config: Some(config) }).await.expect("topic");
}

async fn create_queue(c: &mut Client, topic: &str, name: &str) {
    let config = pb::SubscriptionConfig {
        mode: pb::SubscriptionMode::Queue as i32,
        start: pb::StartPosition::Earliest as i32,
        max_in_flight_per_consumer: Some(10_000),
        ..Default::default()
    };
    c.create_subscription(pb::CreateSubscriptionRequest {
        topic: topic.into(),
        name: name.into(),
        config: Some(config),
    })
    .await
    .expect("subscription");
}

async fn publish_batched(client: &Client, secs: u64) -> f64 {
    let mut c = client.clone();
    create_topic(&mut c, "batched").await;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (mut c, count) = (client.clone(), count.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let events = (0..100).map(|i| event(i, vec![b'x'; 1024])).collect();
                    c.publish(pb::PublishRequest { topic: "batched".into(), events, deliver_at: None })
                        .await
                        .expect("publish");
                    count.fetch_add(100, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        t.await.expect("task");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn publish_unbatched(client: &Client, secs: u64) -> f64 {
    let mut c = client.clone();
    create_topic(&mut c, "unbatched").await;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        for _ in 0..64 {
            let (mut c, count) = (client.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let req = pb::PublishRequest {
                        topic: "unbatched".into(),
                        events: vec![event(0, vec![b'x'; 1024])],
                        deliver_at: None,
                    };
                    c.publish(req).await.expect("publish");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Opens a consume stream; returns the request sender and the response stream.
async fn open_consumer(
    client: &Client,
    topic: &str,
    sub: &str,
) -> (tokio::sync::mpsc::Sender<pb::ConsumeRequest>, tonic::Streaming<pb::ConsumeResponse>) {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let open = pb::consume_request::Request::Open(pb::consume_request::Open {
        topic: topic.into(),
        subscription: sub.into(),
        credits: 1000,
    });
    tx.send(pb::ConsumeRequest { request_id: 0, request: Some(open) }).await.expect("open");
    let mut c = client.clone();
    let responses =
        c.consume(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("consume").into_inner();
    (tx, responses)
}

/// Acks the deliveries and gives their credits back, in one request each.
async fn ack_and_credit(tx: &tokio::sync::mpsc::Sender<pb::ConsumeRequest>, ds: &[pb::Delivery], id: u64) {
    let receipts = ds.iter().map(|d| d.receipt.clone()).collect();
    let ack = pb::consume_request::Request::Ack(pb::consume_request::Ack { receipts });
    tx.send(pb::ConsumeRequest { request_id: id, request: Some(ack) }).await.expect("ack");
    let credit =
        pb::consume_request::Request::Credit(pb::consume_request::Credit { credits: ds.len() as u32 });
    tx.send(pb::ConsumeRequest { request_id: 0, request: Some(credit) }).await.expect("credit");
}

async fn consume_ack(client: &Client, n: u64) -> f64 {
    let mut c = client.clone();
    create_topic(&mut c, "drain").await;
    create_queue(&mut c, "drain", "workers").await;
    for b in 0..n / 500 {
        let events = (0..500).map(|i| event(b * 500 + i, vec![b'x'; 1024])).collect();
        c.publish(pb::PublishRequest { topic: "drain".into(), events, deliver_at: None })
            .await
            .expect("publish");
    }
    let (tx, mut responses) = open_consumer(client, "drain", "workers").await;
    let start = Instant::now();
    let mut got = 0;
    let mut id = 1;
    while got < n {
        let Some(resp) = responses.next().await else { break };
        if let Some(pb::consume_response::Response::Deliveries(d)) = resp.expect("stream").response {
            got += d.deliveries.len() as u64;
            ack_and_credit(&tx, &d.deliveries, id).await;
            id += 1;
        }
    }
    got as f64 / start.elapsed().as_secs_f64()
}

/// End-to-end latencies, and the publish round trips alone (both from the intended send time).
async fn latency_at_rate(client: &Client, rate: u64, secs: u64) -> (Histogram<u64>, Histogram<u64>) {
    let mut c = client.clone();
    create_topic(&mut c, "latency").await;
    create_queue(&mut c, "latency", "workers").await;
    let (tx, mut responses) = open_consumer(client, "latency", "workers").await;
    let total = rate * secs;
    let origin = Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let round_trips = Arc::new(parking_lot::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    // The pacer is an OS thread: tokio's timer rounds sleeps up to the millisecond, which would
    // count the client's own lateness against the server.
    let publisher = {
        let client = client.clone();
        let round_trips = round_trips.clone();
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            for i in 0..total {
                let intended = origin + interval * i as u32;
                if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut c = client.clone();
                // The payload carries the intended send time (ns after origin).
                let mut payload = (interval * i as u32).as_nanos().to_le_bytes()[..8].to_vec();
                payload.resize(1024, b'x');
                let round_trips = round_trips.clone();
                runtime.spawn(async move {
                    let req = pb::PublishRequest {
                        topic: "latency".into(),
                        events: vec![event(i, payload)],
                        deliver_at: None,
                    };
                    c.publish(req).await.expect("publish");
                    let rtt = intended.elapsed().as_micros().max(1) as u64;
                    round_trips.lock().record(rtt).expect("record");
                });
            }
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut got = 0;
    let mut id = 1;
    while got < total {
        let Some(resp) = responses.next().await else { break };
        if let Some(pb::consume_response::Response::Deliveries(d)) = resp.expect("stream").response {
            let now = Instant::now();
            for del in &d.deliveries {
                if let Some(ce::cloud_event::Data::BinaryData(b)) =
                    del.event.as_ref().and_then(|e| e.data.as_ref())
                {
                    let mut ns = [0u8; 8];
                    ns.copy_from_slice(&b[..8]);
                    let sent = origin + Duration::from_nanos(u64::from_le_bytes(ns));
                    hist.record(now.saturating_duration_since(sent).as_micros().max(1) as u64)
                        .expect("record");
                }
            }
            got += d.deliveries.len() as u64;
            ack_and_credit(&tx, &d.deliveries, id).await;
            id += 1;
        }
    }
    publisher.join().expect("publisher");
    let round_trips = round_trips.lock().clone();
    (hist, round_trips)
}

fn main() {
    let secs: u64 = std::env::var("SWITCHBOARD_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    // The server runs on a runtime of its own, as it would in its own process, so client work
    // does not queue in front of server work on one scheduler.
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let client_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        ..ServerConfig::default()
    };
    let server = server_rt.block_on(Server::start(config)).expect("server");
    let addr = server.grpc_addr();
    client_rt.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}")).expect("url").connect().await.expect("connect");
        let client = Client::new(channel).max_decoding_message_size(64 << 20);

        println!(
            "switchboard serve, gRPC on loopback, 1 KiB messages, fsync {:?} (2 cores shared by server and clients)",
            fsync_policy()
        );
        let batched = publish_batched(&client, secs).await;
        println!("publish, batches of 100, 4 clients:        {batched:>10.0} msgs/s");
        let unbatched = publish_unbatched(&client, secs).await;
        println!("publish, unbatched, 8 × 64 in flight:       {unbatched:>10.0} msgs/s");
        let drained = consume_ack(&client, 100_000).await;
        println!("consume + ack, 1 stream, 1,000 credits:     {drained:>10.0} msgs/s");
        let (h, rtt) = latency_at_rate(&client, 2_000, secs.max(5)).await;
        println!(
            "end-to-end latency at 2,000 msgs/s:         p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} messages)",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.len()
        );
        println!(
            "  of which the publish round trip:           p50 {:.2} ms, p99 {:.2} ms",
            rtt.value_at_quantile(0.5) as f64 / 1000.0,
            rtt.value_at_quantile(0.99) as f64 / 1000.0
        );
    });
    server_rt.block_on(server.shutdown()).expect("shutdown");
}
