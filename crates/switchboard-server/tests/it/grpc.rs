//! The gRPC API through the generated Rust client (and a Python grpcio client), against a real
//! server on loopback.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use switchboard_testkit::{ADMIN_TOKEN, ORDERS_TOKEN, TestServer};

use switchboard_proto as pb;
use switchboard_proto::reason::{self, Reason, key};

use api::consume_request::Request as In;
use api::consume_response::{Opened, Outcome, Response as Out};
use api::switchboard_client::SwitchboardClient;
use pb::io::cloudevents::v1 as ce;
use pb::switchboard::v1 as api;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Client helpers

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            let value = MetadataValue::try_from(format!("Bearer {t}")).unwrap();
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

type Client = SwitchboardClient<InterceptedService<Channel, Bearer>>;

async fn channel(srv: &TestServer) -> Channel {
    Channel::from_shared(srv.grpc()).unwrap().connect().await.unwrap()
}

async fn client(srv: &TestServer) -> Client {
    client_as(srv, None).await
}

async fn client_as(srv: &TestServer, token: Option<&str>) -> Client {
    SwitchboardClient::with_interceptor(channel(srv).await, Bearer(token.map(str::to_owned)))
}

/// The code of an error that must happen.
fn code_of<T>(r: Result<T, Status>) -> Code {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(s) => s.code(),
    }
}

fn status_of<T>(r: Result<T, Status>) -> Status {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(s) => s,
    }
}

fn attr(a: ce::cloud_event::cloud_event_attribute_value::Attr) -> ce::cloud_event::CloudEventAttributeValue {
    ce::cloud_event::CloudEventAttributeValue { attr: Some(a) }
}

fn event(id: &str, data: &str) -> ce::CloudEvent {
    use ce::cloud_event::cloud_event_attribute_value::Attr;
    ce::CloudEvent {
        id: id.into(),
        source: "/tests/grpc".into(),
        spec_version: "1.0".into(),
        r#type: "dev.switchboard.test".into(),
        attributes: [("datacontenttype".to_owned(), attr(Attr::CeString("application/json".into())))].into(),
        data: Some(ce::cloud_event::Data::TextData(data.into())),
    }
}

fn events(prefix: &str, n: usize) -> Vec<ce::CloudEvent> {
    (0..n).map(|i| event(&format!("{prefix}-{i}"), &format!("{{\"n\":{i}}}"))).collect()
}

fn queue(lease_ms: Option<u64>, max_deliveries: Option<u32>) -> api::SubscriptionConfig {
    api::SubscriptionConfig {
        mode: api::SubscriptionMode::Queue as i32,
        lease_ms,
        max_deliveries,
        ..Default::default()
    }
}

async fn create_topic(c: &mut Client, name: &str, partitions: u32) -> api::Topic {
    let config = api::TopicConfig { partitions: Some(partitions), ..Default::default() };
    c.create_topic(api::CreateTopicRequest { name: name.into(), config: Some(config) })
        .await
        .unwrap()
        .into_inner()
}

async fn create_sub(
    c: &mut Client,
    topic: &str,
    name: &str,
    config: api::SubscriptionConfig,
) -> api::Subscription {
    let req = api::CreateSubscriptionRequest { topic: topic.into(), name: name.into(), config: Some(config) };
    c.create_subscription(req).await.unwrap().into_inner()
}

fn publish_req(topic: &str, events: Vec<ce::CloudEvent>) -> api::PublishRequest {
    api::PublishRequest { topic: topic.into(), events, deliver_at: None }
}

async fn publish(c: &mut Client, topic: &str, events: Vec<ce::CloudEvent>) -> Vec<api::PublishReceipt> {
    c.publish(publish_req(topic, events)).await.unwrap().into_inner().receipts
}

async fn stats(c: &mut Client, topic: &str, sub: &str) -> api::SubscriptionStats {
    let req = api::StatsRequest { topic: topic.into(), subscription: sub.into() };
    c.stats(req).await.unwrap().into_inner()
}

async fn end_offset(c: &mut Client, topic: &str) -> u64 {
    let t = c.get_topic(api::GetTopicRequest { name: topic.into() }).await.unwrap().into_inner();
    t.partitions.iter().map(|p| p.end_offset).sum()
}

async fn topic_names(c: &mut Client) -> Vec<String> {
    let topics = c.list_topics(api::ListTopicsRequest {}).await.unwrap().into_inner().topics;
    topics.into_iter().map(|t| t.name).collect()
}

fn open(topic: &str, sub: &str, credits: u32) -> In {
    In::Open(api::consume_request::Open { topic: topic.into(), subscription: sub.into(), credits })
}

fn data_text(e: &ce::CloudEvent) -> &str {
    match &e.data {
        Some(ce::cloud_event::Data::TextData(s)) => s,
        other => panic!("expected text data, got {other:?}"),
    }
}

/// One consume stream, seen from the client.
struct Consume {
    tx: mpsc::Sender<api::ConsumeRequest>,
    rx: Streaming<api::ConsumeResponse>,
    opened: Opened,
    /// Deliveries that arrived while waiting for something else.
    buffered: VecDeque<api::Delivery>,
    /// Credits the server said the stream holds, in its last `deliveries`.
    credits: u32,
    next_id: u64,
}

impl Consume {
    /// Opens a stream; the status that refused it, if one did.
    async fn open(c: &mut Client, topic: &str, sub: &str, credits: u32) -> Result<Consume, Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(api::ConsumeRequest { request_id: 0, request: Some(open(topic, sub, credits)) })
            .await
            .unwrap();
        let mut rx = c.consume(ReceiverStream::new(rx)).await?.into_inner();
        match tokio::time::timeout(WAIT, rx.message()).await.expect("no answer to open")? {
            Some(api::ConsumeResponse { response: Some(Out::Opened(opened)) }) => {
                Ok(Consume { tx, rx, credits: opened.credits, opened, buffered: VecDeque::new(), next_id: 0 })
            }
            other => panic!("expected `opened`, got {other:?}"),
        }
    }

    async fn send(&mut self, request: In) -> u64 {
        self.next_id += 1;
        let req = api::ConsumeRequest { request_id: self.next_id, request: Some(request) };
        self.tx.send(req).await.unwrap();
        self.next_id
    }

    async fn credit(&mut self, credits: u32) {
        self.send(In::Credit(api::consume_request::Credit { credits })).await;
    }

    /// The next response, or `None` if none arrives within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Out> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Err(_) => None,
            Ok(r) => Some(r.unwrap().expect("the stream ended").response.expect("an empty response")),
        }
    }

    /// Exactly the next `n` deliveries.
    async fn receive(&mut self, n: usize) -> Vec<api::Delivery> {
        let deadline = Instant::now() + WAIT;
        while self.buffered.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Out::Deliveries(d)) => {
                    self.credits = d.credits;
                    self.buffered.extend(d.deliveries);
                }
                None => panic!("timed out with {} of {n} deliveries", self.buffered.len()),
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(self.buffered.len(), n, "more deliveries than expected");
        self.buffered.drain(..).collect()
    }

    /// Asserts that nothing is delivered for `wait`.
    async fn expect_nothing(&mut self, wait: Duration) {
        assert!(self.buffered.is_empty(), "unexpected deliveries: {:?}", self.buffered);
        if let Some(r) = self.next(wait).await {
            panic!("expected nothing, got {r:?}");
        }
    }

    /// Sends an ack, nack, extend or commit and waits for its answer.
    async fn settle(&mut self, request: In) -> Vec<Outcome> {
        let id = self.send(request).await;
        loop {
            match self.next(WAIT).await.expect("no answer") {
                Out::Settled(s) if s.request_id == id => return s.outcomes,
                Out::Deliveries(d) => {
                    self.credits = d.credits;
                    self.buffered.extend(d.deliveries);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn ack(&mut self, receipts: Vec<String>) -> Vec<Outcome> {
        self.settle(In::Ack(api::consume_request::Ack { receipts })).await
    }

    async fn ack_all(&mut self, deliveries: &[api::Delivery]) {
        let outcomes = self.ack(deliveries.iter().map(|d| d.receipt.clone()).collect()).await;
        assert_eq!(outcomes.len(), deliveries.len());
        for o in outcomes {
            assert_eq!(o.error, None, "ack of {} failed", o.receipt);
        }
    }

    /// Sends no more requests.
    fn half_close(&mut self) {
        self.tx = mpsc::channel(1).0;
    }

    /// The status that ends the stream.
    async fn ended_with(&mut self) -> Status {
        loop {
            match tokio::time::timeout(WAIT, self.rx.message()).await.expect("the stream did not end") {
                Err(status) => return status,
                Ok(None) => panic!("the stream ended without an error"),
                Ok(Some(_)) => {}
            }
        }
    }
}

fn outcome_code(o: &Outcome) -> Code {
    Code::from_i32(o.error.as_ref().map_or(0, |e| e.code))
}

// ---------------------------------------------------------------------------------------------
// Admin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_round_trip() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;

    let config = api::TopicConfig {
        partitions: Some(3),
        retention_max_age_ms: Some(0),
        fsync: api::FsyncPolicy::Interval as i32,
        fsync_interval_ms: Some(20),
        ..Default::default()
    };
    let req = api::CreateTopicRequest { name: "orders".into(), config: Some(config) };
    let t = c.create_topic(req.clone()).await.unwrap().into_inner();
    assert_eq!(t.name, "orders");
    assert_eq!(t.partitions.len(), 3);
    let got = t.config.unwrap();
    assert_eq!(got.partitions, Some(3));
    assert_eq!(got.retention_max_age_ms, Some(0), "0: no age limit");
    assert_eq!(got.fsync, api::FsyncPolicy::Interval as i32);
    assert_eq!(got.fsync_interval_ms, Some(20));
    assert_eq!(got.max_message_bytes, Some(1024 * 1024), "defaults fill the rest");

    // Again with the same settings: fine. With others: ALREADY_EXISTS.
    c.create_topic(req).await.unwrap();
    let other = api::CreateTopicRequest {
        name: "orders".into(),
        config: Some(api::TopicConfig { partitions: Some(1), ..Default::default() }),
    };
    assert_eq!(code_of(c.create_topic(other).await), Code::AlreadyExists);

    let s = create_sub(&mut c, "orders", "billing", queue(Some(5_000), Some(3))).await;
    let sc = s.config.unwrap();
    assert_eq!((s.topic.as_str(), s.name.as_str()), ("orders", "billing"));
    assert_eq!(sc.mode, api::SubscriptionMode::Queue as i32);
    assert_eq!(sc.lease_ms, Some(5_000));
    assert_eq!(sc.max_deliveries, Some(3));
    assert_eq!(sc.dead_letter_topic.as_deref(), Some("orders.billing.dlq"));
    let stream = api::SubscriptionConfig {
        mode: api::SubscriptionMode::Stream as i32,
        start: api::StartPosition::Latest as i32,
        ..Default::default()
    };
    let s = create_sub(&mut c, "orders", "audit", stream).await;
    assert_eq!(s.config.unwrap().start, api::StartPosition::Latest as i32);

    assert_eq!(topic_names(&mut c).await, ["orders", "orders.billing.dlq"]);
    let subs = c
        .list_subscriptions(api::ListSubscriptionsRequest { topic: "orders".into() })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["audit", "billing"]);
    let t = c.get_topic(api::GetTopicRequest { name: "orders".into() }).await.unwrap().into_inner();
    assert_eq!(t.subscriptions.len(), 2);

    let st = stats(&mut c, "orders", "audit").await;
    assert_eq!(st.mode, api::SubscriptionMode::Stream as i32);
    assert_eq!(st.partitions.len(), 3);

    c.delete_subscription(api::DeleteSubscriptionRequest { topic: "orders".into(), name: "audit".into() })
        .await
        .unwrap();
    let st = c.stats(api::StatsRequest { topic: "orders".into(), subscription: "audit".into() }).await;
    assert_eq!(code_of(st), Code::NotFound);
    c.delete_topic(api::DeleteTopicRequest { name: "orders".into() }).await.unwrap();
    assert_eq!(code_of(c.get_topic(api::GetTopicRequest { name: "orders".into() }).await), Code::NotFound);
    assert_eq!(
        code_of(c.delete_topic(api::DeleteTopicRequest { name: "orders".into() }).await),
        Code::NotFound
    );
    assert_eq!(topic_names(&mut c).await, ["orders.billing.dlq"], "the dead-letter topic stays");
}

// ---------------------------------------------------------------------------------------------
// Publish and consume

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_publish_then_consume_with_acks() {
    use ce::cloud_event::cloud_event_attribute_value::Attr;
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 2).await;
    create_sub(&mut c, "orders", "billing", queue(Some(1_500), None)).await;

    let mut batch = events("o", 9);
    let time = prost_types::Timestamp { seconds: 1_764_151_200, nanos: 0 };
    let mut rich = event("o-rich", "{\"rich\":true}");
    rich.attributes.insert("time".into(), attr(Attr::CeTimestamp(time)));
    rich.attributes.insert("subject".into(), attr(Attr::CeString("order-1".into())));
    rich.attributes.insert("datacontenttype".into(), attr(Attr::CeString("application/json".into())));
    rich.attributes.insert("partitionkey".into(), attr(Attr::CeString("customer-7".into())));
    rich.attributes.insert("priority".into(), attr(Attr::CeInteger(5)));
    batch.push(rich.clone());
    let receipts = publish(&mut c, "orders", batch).await;
    assert_eq!(receipts.len(), 10);
    assert!(receipts.iter().all(|r| !r.duplicate && r.fsynced && r.published_at.is_some()));
    let st = stats(&mut c, "orders", "billing").await;
    assert_eq!(st.backlog, 10);

    let mut s = Consume::open(&mut c, "orders", "billing", 100).await.unwrap();
    assert_eq!(s.opened.mode, api::SubscriptionMode::Queue as i32);
    assert_eq!(s.opened.credits, 100);
    let got = s.receive(10).await;
    assert_eq!(s.credits, 90);
    let mut ids: Vec<_> = got.iter().map(|d| d.event.as_ref().unwrap().id.clone()).collect();
    ids.sort();
    let mut want: Vec<_> = (0..9).map(|i| format!("o-{i}")).collect();
    want.push("o-rich".into());
    want.sort();
    assert_eq!(ids, want);
    for d in &got {
        assert_eq!(d.attempt, 1);
        assert!(!d.receipt.is_empty() && d.lease_expires_at.is_some() && d.published_at.is_some());
    }
    // The CloudEvent comes back as it went in (extensions as strings, time as a timestamp).
    let back = got.iter().find(|d| d.event.as_ref().unwrap().id == "o-rich").unwrap().event.clone().unwrap();
    assert_eq!(
        (back.source.as_str(), back.r#type.as_str(), back.spec_version.as_str()),
        ("/tests/grpc", "dev.switchboard.test", "1.0")
    );
    assert_eq!(back.attributes["time"], attr(Attr::CeTimestamp(time)));
    assert_eq!(back.attributes["subject"], attr(Attr::CeString("order-1".into())));
    assert_eq!(back.attributes["partitionkey"], attr(Attr::CeString("customer-7".into())));
    assert_eq!(back.attributes["priority"], attr(Attr::CeString("5".into())));
    assert_eq!(data_text(&back), "{\"rich\":true}");

    // Ack nine, keep one: the acked ones never come back, the other one does once its lease
    // (1.5 s) runs out.
    let (kept, acked) = got.split_at(1);
    s.ack_all(acked).await;
    let st = stats(&mut c, "orders", "billing").await;
    assert_eq!((st.backlog, st.in_flight), (1, 1));
    let again = s.receive(1).await;
    assert_eq!(again[0].event.as_ref().unwrap().id, kept[0].event.as_ref().unwrap().id);
    assert_eq!(again[0].attempt, 2);
    assert_ne!(again[0].receipt, kept[0].receipt);
    // The stale receipt no longer settles anything.
    let outcomes = s.ack(vec![kept[0].receipt.clone()]).await;
    assert_ne!(outcome_code(&outcomes[0]), Code::Ok);
    s.ack_all(&again).await;
    s.expect_nothing(Duration::from_millis(800)).await;
    let st = stats(&mut c, "orders", "billing").await;
    assert_eq!((st.backlog, st.in_flight, st.consumers), (0, 0, 1));
    drop(s);

    // A new stream gets nothing: everything is acked.
    let mut s = Consume::open(&mut c, "orders", "billing", 10).await.unwrap();
    s.expect_nothing(Duration::from_millis(700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stream_answers_each_batch_in_order() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(None, None)).await;

    let (tx, rx) = mpsc::channel(8);
    let mut answers = c.publish_stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let batch = |seq: u64, events: Vec<ce::CloudEvent>| api::PublishStreamRequest {
        sequence: seq,
        batch: Some(publish_req("orders", events)),
    };
    let mut no_source = event("bad", "{}");
    no_source.source.clear();
    tx.send(batch(1, events("a", 3))).await.unwrap();
    tx.send(batch(2, vec![event("b-0", "{}"), no_source])).await.unwrap();
    tx.send(batch(3, vec![event("c-0", "{}"), event("a-0", "again")])).await.unwrap();
    tx.send(api::PublishStreamRequest { sequence: 4, batch: None }).await.unwrap();
    tx.send(batch(5, events("d", 1))).await.unwrap();

    let mut next = async || tokio::time::timeout(WAIT, answers.message()).await.unwrap().unwrap();
    use api::publish_stream_response::Result as R;
    let a = next().await.unwrap();
    assert_eq!(a.sequence, 1);
    let Some(R::Published(p)) = a.result else { panic!("{a:?}") };
    assert_eq!(p.receipts.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2]);

    let a = next().await.unwrap();
    assert_eq!(a.sequence, 2);
    let Some(R::Error(e)) = a.result else { panic!("{a:?}") };
    assert_eq!(Code::from_i32(e.code), Code::InvalidArgument);
    assert!(e.message.contains("event 1") && e.message.contains("source"), "{}", e.message);
    assert_eq!(e.reason, Reason::BadRequest.as_str());
    assert_eq!(e.metadata.get(key::TOPIC).map(String::as_str), Some("orders"));

    let a = next().await.unwrap();
    assert_eq!(a.sequence, 3);
    let Some(R::Published(p)) = a.result else { panic!("{a:?}") };
    assert_eq!((p.receipts[0].offset, p.receipts[0].duplicate), (3, false));
    assert_eq!((p.receipts[1].offset, p.receipts[1].duplicate), (0, true), "a-0 was published in batch 1");

    let a = next().await.unwrap();
    assert_eq!(a.sequence, 4);
    let Some(R::Error(e)) = a.result else { panic!("{a:?}") };
    assert_eq!(Code::from_i32(e.code), Code::InvalidArgument);

    let a = next().await.unwrap();
    assert_eq!(a.sequence, 5);
    assert!(matches!(a.result, Some(R::Published(_))));

    drop(tx);
    assert!(next().await.is_none(), "the stream ends when the client ends it");
    assert_eq!(stats(&mut c, "orders", "billing").await.backlog, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_bound_deliveries() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 2).await;
    create_sub(&mut c, "orders", "billing", queue(None, None)).await;
    publish(&mut c, "orders", events("o", 10)).await;

    let mut s = Consume::open(&mut c, "orders", "billing", 3).await.unwrap();
    assert_eq!(s.opened.credits, 3);
    assert_eq!(s.receive(3).await.len(), 3);
    assert_eq!(s.credits, 0);
    // Acks free no credit.
    s.expect_nothing(Duration::from_millis(700)).await;
    s.credit(4).await;
    let got = s.receive(4).await;
    assert_eq!(s.credits, 0);
    s.ack_all(&got).await;
    s.expect_nothing(Duration::from_millis(700)).await;
    s.credit(100).await;
    assert_eq!(s.receive(3).await.len(), 3);
    assert_eq!(s.credits, 97);
    let st = stats(&mut c, "orders", "billing").await;
    assert_eq!((st.backlog, st.in_flight), (6, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_clamped_to_the_limit() {
    let srv = TestServer::start_with(|c| c.limits.max_consume_credits = 5).await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(None, None)).await;
    publish(&mut c, "orders", events("o", 8)).await;

    let mut s = Consume::open(&mut c, "orders", "billing", 1000).await.unwrap();
    assert_eq!((s.opened.credits, s.opened.max_credits), (5, 5));
    s.receive(5).await;
    s.expect_nothing(Duration::from_millis(600)).await;
    s.credit(u32::MAX).await;
    s.receive(3).await;
    assert_eq!(s.credits, 2, "5 (clamped) minus 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_stream_ends_once_its_credits_are_used() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(None, None)).await;

    let mut s = Consume::open(&mut c, "orders", "billing", 3).await.unwrap();
    s.half_close();
    publish(&mut c, "orders", events("o", 5)).await;
    assert_eq!(s.receive(3).await.len(), 3);
    let end = tokio::time::timeout(WAIT, s.rx.message()).await.unwrap().unwrap();
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
    assert_eq!(stats(&mut c, "orders", "billing").await.in_flight, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_delay_redelivers_later() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(None, None)).await;
    publish(&mut c, "orders", events("o", 1)).await;

    let mut s = Consume::open(&mut c, "orders", "billing", 10).await.unwrap();
    let first = s.receive(1).await;
    let nacked = Instant::now();
    let outcomes = s
        .settle(In::Nack(api::consume_request::Nack {
            receipts: vec![first[0].receipt.clone()],
            delay_ms: 1_000,
            error: "try later".into(),
        }))
        .await;
    assert_eq!(outcomes[0].error, None);
    assert_eq!((outcomes[0].partition, outcomes[0].offset), (0, 0));
    let st = stats(&mut c, "orders", "billing").await;
    assert_eq!((st.backlog, st.scheduled), (1, 1));
    s.expect_nothing(Duration::from_millis(500)).await;
    let again = s.receive(1).await;
    assert!(nacked.elapsed() >= Duration::from_millis(1_000), "redelivered after {:?}", nacked.elapsed());
    assert_eq!((again[0].offset, again[0].attempt), (0, 2));
    s.ack_all(&again).await;
    assert_eq!(stats(&mut c, "orders", "billing").await.backlog, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_a_lease() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(Some(1_000), None)).await;
    publish(&mut c, "orders", events("o", 1)).await;

    let mut s = Consume::open(&mut c, "orders", "billing", 10).await.unwrap();
    let got = s.receive(1).await;
    let leased_until = got[0].lease_expires_at.unwrap();
    let outcomes = s
        .settle(In::Extend(api::consume_request::Extend {
            receipts: vec![got[0].receipt.clone()],
            by_ms: 5_000,
        }))
        .await;
    assert_eq!(outcomes[0].error, None);
    let extended = outcomes[0].lease_expires_at.unwrap();
    assert!(extended.seconds >= leased_until.seconds + 4, "{extended:?} vs {leased_until:?}");
    // Well past the original 1 s lease: not delivered again, and the receipt still acks.
    s.expect_nothing(Duration::from_millis(2_000)).await;
    s.ack_all(&got).await;
    assert_eq!(stats(&mut c, "orders", "billing").await.backlog, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscription_commit_and_seek() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "audit", 1).await;
    let stream = api::SubscriptionConfig { mode: api::SubscriptionMode::Stream as i32, ..Default::default() };
    create_sub(&mut c, "audit", "archive", stream).await;
    publish(&mut c, "audit", events("a", 2)).await;
    // Later, so that a seek by time can tell the batches apart.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = publish(&mut c, "audit", events("b", 3)).await;

    let mut s = Consume::open(&mut c, "audit", "archive", 10).await.unwrap();
    assert_eq!(s.opened.mode, api::SubscriptionMode::Stream as i32);
    let got = s.receive(5).await;
    assert_eq!(got.iter().map(|d| d.offset).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(got.iter().all(|d| d.receipt.is_empty() && d.lease_expires_at.is_none() && d.attempt == 1));
    assert_eq!(got[4].event.as_ref().unwrap().id, "b-2");
    assert_eq!(data_text(got[4].event.as_ref().unwrap()), "{\"n\":2}");

    let commit = |partition, offset| {
        In::Commit(api::consume_request::Commit { offsets: vec![api::PartitionOffset { partition, offset }] })
    };
    let outcomes = s.settle(commit(0, 3)).await;
    assert_eq!(outcomes[0].error, None);
    let st = stats(&mut c, "audit", "archive").await;
    assert_eq!((st.backlog, st.in_flight), (2, 2));
    // Queue operations do not apply; a partition that does not exist is not found.
    let outcomes = s.ack(vec!["0.1.1".into()]).await;
    assert_eq!(outcome_code(&outcomes[0]), Code::FailedPrecondition);
    assert_eq!(outcome_code(&s.settle(commit(7, 0)).await[0]), Code::NotFound);
    assert_eq!(outcome_code(&s.settle(commit(0, 99)).await[0]), Code::InvalidArgument);

    let seek = |target| api::SeekRequest {
        topic: "audit".into(),
        subscription: "archive".into(),
        target: Some(target),
    };
    use api::seek_request::Target;
    c.seek(seek(Target::Position(api::SeekPosition::Earliest as i32))).await.unwrap();
    assert_eq!(s.receive(5).await.iter().map(|d| d.offset).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(stats(&mut c, "audit", "archive").await.backlog, 5, "seek moves the committed offset");

    s.credit(10).await;
    c.seek(seek(Target::Offset(api::PartitionOffset { partition: 0, offset: 4 }))).await.unwrap();
    assert_eq!(s.receive(1).await[0].offset, 4);
    c.seek(seek(Target::Time(later[0].published_at.unwrap()))).await.unwrap();
    let from_time: Vec<u64> = s.receive(3).await.iter().map(|d| d.offset).collect();
    assert_eq!(from_time, [2, 3, 4], "time seeks go to the first message at or after it");
    c.seek(seek(Target::Position(api::SeekPosition::Latest as i32))).await.unwrap();
    s.expect_nothing(Duration::from_millis(500)).await;
    assert_eq!(stats(&mut c, "audit", "archive").await.backlog, 0);

    c.seek(seek(Target::Position(api::SeekPosition::Earliest as i32))).await.unwrap();
    s.receive(5).await;
    let req =
        api::CommitRequest { topic: "audit".into(), subscription: "archive".into(), partition: 0, offset: 5 };
    c.commit(req).await.unwrap();
    assert_eq!(stats(&mut c, "audit", "archive").await.backlog, 0);

    let bad = api::SeekRequest { topic: "audit".into(), subscription: "archive".into(), target: None };
    assert_eq!(code_of(c.seek(bad).await), Code::InvalidArgument);
    let out_of_range = seek(Target::Offset(api::PartitionOffset { partition: 0, offset: 6 }));
    assert_eq!(code_of(c.seek(out_of_range).await), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(None, Some(1))).await;
    publish(&mut c, "orders", vec![event("poison", "{}")]).await;

    let mut s = Consume::open(&mut c, "orders", "billing", 10).await.unwrap();
    let got = s.receive(1).await;
    let outcomes = s
        .settle(In::Nack(api::consume_request::Nack {
            receipts: vec![got[0].receipt.clone()],
            delay_ms: 0,
            error: "cannot parse".into(),
        }))
        .await;
    assert_eq!(outcomes[0].error, None);
    let deadline = Instant::now() + WAIT;
    while stats(&mut c, "orders", "billing").await.dead_lettered < 1 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(end_offset(&mut c, "orders.billing.dlq").await, 1);
    s.expect_nothing(Duration::from_millis(300)).await;

    let redrive = api::RedriveRequest { topic: "orders".into(), subscription: "billing".into(), max: 0 };
    assert_eq!(c.redrive(redrive.clone()).await.unwrap().into_inner().moved, 1);
    let back = s.receive(1).await;
    let e = back[0].event.as_ref().unwrap();
    assert_eq!((e.id.as_str(), back[0].attempt), ("poison", 1));
    assert!(!e.attributes.contains_key("dlreason"), "dead-letter metadata is removed: {:?}", e.attributes);
    s.ack_all(&back).await;
    assert_eq!(stats(&mut c, "orders", "billing").await.backlog, 0);
    assert_eq!(c.redrive(redrive).await.unwrap().into_inner().moved, 0);
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    use ce::cloud_event::cloud_event_attribute_value::Attr;
    let srv = TestServer::start_with(|c| {
        c.limits.max_message_bytes = 1024;
        c.limits.max_batch_messages = 5;
        c.limits.max_request_bytes = 64 * 1024;
    })
    .await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(None, Some(0))).await;
    let before = topic_names(&mut c).await;
    assert_eq!(before, ["orders"]);

    // Names and settings.
    assert_eq!(code_of(c.publish(publish_req("nope", events("x", 1))).await), Code::NotFound);
    assert_eq!(code_of(c.publish(publish_req("../etc", events("x", 1))).await), Code::InvalidArgument);
    let named = |name: &str, partitions| api::CreateTopicRequest {
        name: name.into(),
        config: Some(api::TopicConfig { partitions: Some(partitions), ..Default::default() }),
    };
    let invalid = status_of(c.create_topic(named("bad/name", 1)).await);
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(!invalid.message().is_empty());
    assert_eq!(code_of(c.create_topic(named("", 1)).await), Code::InvalidArgument);
    assert_eq!(code_of(c.create_topic(named("fresh", 0)).await), Code::InvalidArgument);
    assert_eq!(code_of(c.create_topic(named("orders", 2)).await), Code::AlreadyExists);
    let sub = |topic: &str, name: &str| api::CreateSubscriptionRequest {
        topic: topic.into(),
        name: name.into(),
        config: Some(queue(Some(0), None)),
    };
    assert_eq!(code_of(c.create_subscription(sub("orders", "zero-lease")).await), Code::InvalidArgument);
    let unknown_topic =
        api::CreateSubscriptionRequest { topic: "nope".into(), name: "x".into(), config: None };
    assert_eq!(code_of(c.create_subscription(unknown_topic).await), Code::NotFound);

    // Malformed CloudEvents.
    let mut cases: Vec<(&str, ce::CloudEvent)> = Vec::new();
    let mut e = event("x", "{}");
    e.id.clear();
    cases.push(("id", e));
    let mut e = event("x", "{}");
    e.source.clear();
    cases.push(("source", e));
    let mut e = event("x", "{}");
    e.r#type.clear();
    cases.push(("type", e));
    let mut e = event("x", "{}");
    e.spec_version = "0.3".into();
    cases.push(("specversion", e));
    let mut e = event("x", "{}");
    e.attributes.insert("time".into(), attr(Attr::CeString("yesterday".into())));
    cases.push(("time", e));
    let mut e = event("x", "{}");
    e.attributes.insert("id".into(), attr(Attr::CeString("y".into())));
    cases.push(("id", e));
    let mut e = event("x", "{}");
    e.attributes.insert("Not-Valid".into(), attr(Attr::CeString("y".into())));
    cases.push(("Not-Valid", e));
    let mut e = event("x", "{}");
    e.attributes.insert("subject".into(), attr(Attr::CeBoolean(true)));
    cases.push(("subject", e));
    for (what, e) in cases {
        let s = status_of(c.publish(publish_req("orders", vec![e])).await);
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert!(s.message().contains(what), "{what}: {}", s.message());
    }
    // One bad event spoils the batch: nothing of it is stored.
    let mut batch = events("ok", 2);
    batch[1].r#type.clear();
    let s = status_of(c.publish(publish_req("orders", batch)).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("event 1:"), "{}", s.message());
    assert_eq!(code_of(c.publish(publish_req("orders", vec![])).await), Code::InvalidArgument);

    // Limits: message size, batch size, request size.
    let big = event("big", &"x".repeat(2_000));
    let s = status_of(c.publish(publish_req("orders", vec![big])).await);
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("limit is 1024"), "{}", s.message());
    assert_eq!(code_of(c.publish(publish_req("orders", events("many", 6))).await), Code::ResourceExhausted);
    let huge = event("huge", &"x".repeat(100 * 1024));
    assert_eq!(code_of(c.publish(publish_req("orders", vec![huge])).await), Code::OutOfRange);

    // Consume: unknown names, a bad first request, unknown receipts, an empty request.
    assert_eq!(code_of(Consume::open(&mut c, "orders", "nope", 1).await), Code::NotFound);
    assert_eq!(code_of(Consume::open(&mut c, "nope", "billing", 1).await), Code::NotFound);
    assert_eq!(code_of(Consume::open(&mut c, "orders", "bad name", 1).await), Code::InvalidArgument);
    let (tx, rx) = mpsc::channel(4);
    tx.send(api::ConsumeRequest {
        request_id: 1,
        request: Some(In::Credit(api::consume_request::Credit { credits: 1 })),
    })
    .await
    .unwrap();
    let mut stream = c.consume(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let s = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("open"), "{}", s.message());

    let mut s = Consume::open(&mut c, "orders", "billing", 10).await.unwrap();
    let outcomes = s.ack(vec!["0.99.12345".into(), "garbage".into()]).await;
    assert_eq!(outcomes.iter().map(outcome_code).collect::<Vec<_>>(), [Code::NotFound, Code::NotFound]);
    assert!(outcomes[1].error.as_ref().unwrap().message.contains("garbage"));
    let nack = In::Nack(api::consume_request::Nack { receipts: vec!["1.2.3".into()], ..Default::default() });
    assert_eq!(outcome_code(&s.settle(nack).await[0]), Code::NotFound);
    let extend = In::Extend(api::consume_request::Extend { receipts: vec!["1.2.3".into()], by_ms: 10 });
    assert_eq!(outcome_code(&s.settle(extend).await[0]), Code::NotFound);
    let commit = In::Commit(api::consume_request::Commit { offsets: vec![api::PartitionOffset::default()] });
    assert_eq!(
        outcome_code(&s.settle(commit).await[0]),
        Code::FailedPrecondition,
        "not a stream subscription"
    );

    // Queue subscriptions cannot seek or commit; no dead-letter topic, no redrive.
    let seek = api::SeekRequest {
        topic: "orders".into(),
        subscription: "billing".into(),
        target: Some(api::seek_request::Target::Position(api::SeekPosition::Earliest as i32)),
    };
    assert_eq!(code_of(c.seek(seek).await), Code::FailedPrecondition);
    let commit = api::CommitRequest {
        topic: "orders".into(),
        subscription: "billing".into(),
        partition: 0,
        offset: 0,
    };
    assert_eq!(code_of(c.commit(commit).await), Code::FailedPrecondition);
    let redrive = api::RedriveRequest { topic: "orders".into(), subscription: "billing".into(), max: 0 };
    assert_eq!(code_of(c.redrive(redrive).await), Code::InvalidArgument);

    // Nothing changed.
    assert_eq!(topic_names(&mut c).await, before);
    assert_eq!(end_offset(&mut c, "orders").await, 0);
    assert_eq!(stats(&mut c, "orders", "billing").await.backlog, 0);

    // The stream survived the refused items: it still delivers and acks.
    publish(&mut c, "orders", events("late", 1)).await;
    let got = s.receive(1).await;
    s.ack_all(&got).await;

    // An empty request ends the stream.
    s.tx.send(api::ConsumeRequest { request_id: 9, request: None }).await.unwrap();
    assert_eq!(s.ended_with().await.code(), Code::InvalidArgument);
}

/// Passes raw bytes through as a gRPC message, to send what no generated client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The reason and resources of a refused call, from its `google.rpc.ErrorInfo`.
fn reason_of<T>(r: Result<T, Status>) -> (Reason, BTreeMap<String, String>) {
    let status = status_of(r);
    let info = reason::error_info(&status).unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    let parsed = info.reason.parse().unwrap_or_else(|e| panic!("{e} in {status:?}"));
    (parsed, info.metadata.into_iter().collect())
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_carries_its_reason_and_the_resources_it_is_about() {
    let srv = TestServer::start_with(|c| {
        c.limits.max_message_bytes = 1024;
        c.limits.max_batch_messages = 5;
    })
    .await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;
    create_sub(&mut c, "orders", "billing", queue(None, None)).await;

    // Limits: the error does not name the topic, the request does.
    let big = event("big", &"x".repeat(2_000));
    let r = c.publish(publish_req("orders", vec![big])).await;
    assert_eq!(reason_of(r), (Reason::MessageTooLarge, meta(&[(key::TOPIC, "orders")])));
    let r = c.publish(publish_req("orders", events("many", 6))).await;
    assert_eq!(reason_of(r), (Reason::BatchTooLarge, meta(&[(key::TOPIC, "orders")])));

    // Names.
    let r = c.publish(publish_req("nope", events("x", 1))).await;
    assert_eq!(reason_of(r), (Reason::TopicNotFound, meta(&[(key::TOPIC, "nope")])));
    let r = c.get_topic(api::GetTopicRequest { name: "nope".into() }).await;
    assert_eq!(reason_of(r), (Reason::TopicNotFound, meta(&[(key::TOPIC, "nope")])));
    let r = c.stats(api::StatsRequest { topic: "orders".into(), subscription: "nope".into() }).await;
    let expected = meta(&[(key::TOPIC, "orders"), (key::SUBSCRIPTION, "nope")]);
    assert_eq!(reason_of(r), (Reason::SubscriptionNotFound, expected.clone()));
    assert_eq!(
        reason_of(Consume::open(&mut c, "orders", "nope", 1).await),
        (Reason::SubscriptionNotFound, expected)
    );
    let r = c.create_topic(api::CreateTopicRequest { name: "bad/name".into(), config: None }).await;
    assert_eq!(reason_of(r).0, Reason::InvalidName);
    let r = c.create_topic(api::CreateTopicRequest {
        name: "orders".into(),
        config: Some(api::TopicConfig { partitions: Some(3), ..Default::default() }),
    });
    assert_eq!(reason_of(r.await), (Reason::TopicExists, meta(&[(key::TOPIC, "orders")])));

    // Per-item errors of a stream carry the same, in `Error.reason` and `Error.metadata`.
    let mut consume = Consume::open(&mut c, "orders", "billing", 1).await.unwrap();
    let outcomes = consume.ack(vec!["not-a-receipt".into()]).await;
    let error = outcomes[0].error.clone().expect("an error");
    assert_eq!(error.reason, Reason::UnknownReceipt.as_str());
    assert_eq!(
        error.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        meta(&[(key::RECEIPT, "not-a-receipt")])
    );
    let offsets = vec![api::PartitionOffset { partition: 0, offset: 0 }];
    let outcomes = consume.settle(In::Commit(api::consume_request::Commit { offsets })).await;
    let error = outcomes[0].error.clone().expect("an error");
    assert_eq!(error.reason, Reason::WrongMode.as_str());
    assert_eq!(
        error.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        meta(&[(key::SUBSCRIPTION, "billing")])
    );

    // Without a token, the reason says so.
    drop(consume);
    srv.shutdown().await.unwrap();
    let srv = TestServer::start_with_auth().await;
    let mut anonymous = client(&srv).await;
    let r = anonymous.list_topics(api::ListTopicsRequest {}).await;
    assert_eq!(reason_of(r), (Reason::Unauthenticated, meta(&[])));
    let mut orders = client_as(&srv, Some(ORDERS_TOKEN)).await;
    let r = orders.publish(publish_req("audit", events("x", 1))).await;
    assert_eq!(reason_of(r), (Reason::Forbidden, meta(&[(key::TOPIC, "audit")])));
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_refused_and_changes_nothing() {
    let srv = TestServer::start().await;
    let mut c = client(&srv).await;
    create_topic(&mut c, "orders", 1).await;

    let mut raw = tonic::client::Grpc::new(channel(&srv).await);
    // An unterminated varint; a string field whose length runs past the end; a wrong wire type.
    let garbage: [&[u8]; 3] = [&[0xff; 11], b"\x0a\x10orders", b"\x0b\x0c\x0d"];
    for method in ["Publish", "CreateTopic", "Stats"] {
        for bytes in garbage {
            raw.ready().await.unwrap();
            let path = format!("/switchboard.v1.Switchboard/{method}").parse().unwrap();
            let s = status_of(raw.unary(Request::new(bytes.to_vec()), path, RawCodec).await);
            assert_eq!(s.code(), Code::Internal, "{method} {bytes:?}: {s:?}");
        }
    }
    // A valid call through the same raw client works, so the refusals were about the bytes.
    raw.ready().await.unwrap();
    let path = "/switchboard.v1.Switchboard/ListTopics".parse().unwrap();
    raw.unary(Request::new(Vec::new()), path, RawCodec).await.unwrap();

    assert_eq!(topic_names(&mut c).await, ["orders"]);
    assert_eq!(end_offset(&mut c, "orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_permissions_are_enforced() {
    let srv = TestServer::start_with_auth().await;
    let mut admin = client_as(&srv, Some(ADMIN_TOKEN)).await;
    create_topic(&mut admin, "orders", 1).await;
    create_topic(&mut admin, "audit", 1).await;
    create_sub(&mut admin, "orders", "billing", queue(None, None)).await;
    create_sub(&mut admin, "audit", "archive", queue(None, None)).await;

    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let mut c = client_as(&srv, token).await;
        let s = status_of(c.list_topics(api::ListTopicsRequest {}).await);
        assert_eq!(s.code(), Code::Unauthenticated, "{token:?}");
        assert!(!s.message().is_empty());
        assert_eq!(code_of(c.publish(publish_req("orders", events("x", 1))).await), Code::Unauthenticated);
        assert_eq!(code_of(Consume::open(&mut c, "orders", "billing", 1).await), Code::Unauthenticated);
        let (_tx, rx) = mpsc::channel(1);
        assert_eq!(code_of(c.publish_stream(ReceiverStream::new(rx)).await), Code::Unauthenticated);
        let st = c.stats(api::StatsRequest { topic: "orders".into(), subscription: "billing".into() }).await;
        assert_eq!(code_of(st), Code::Unauthenticated);
    }

    let mut orders = client_as(&srv, Some(ORDERS_TOKEN)).await;
    let s = status_of(orders.publish(publish_req("audit", events("x", 1))).await);
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("audit"), "{}", s.message());
    let create = api::CreateTopicRequest { name: "orders.new".into(), config: None };
    assert_eq!(code_of(orders.create_topic(create).await), Code::PermissionDenied);
    assert_eq!(code_of(Consume::open(&mut orders, "audit", "archive", 1).await), Code::PermissionDenied);
    let st = orders.stats(api::StatsRequest { topic: "audit".into(), subscription: "archive".into() }).await;
    assert_eq!(code_of(st), Code::PermissionDenied);
    let redrive = api::RedriveRequest { topic: "orders".into(), subscription: "billing".into(), max: 0 };
    assert_eq!(code_of(orders.redrive(redrive).await), Code::PermissionDenied);
    let delete = api::DeleteTopicRequest { name: "orders".into() };
    assert_eq!(code_of(orders.delete_topic(delete).await), Code::PermissionDenied);
    assert_eq!(
        code_of(orders.get_topic(api::GetTopicRequest { name: "audit".into() }).await),
        Code::PermissionDenied
    );
    let visible = topic_names(&mut orders).await;
    assert_eq!(visible, ["orders", "orders.billing.dlq"], "only the topics the token may consume");

    // Per batch on a publish stream: the refused batch is answered, the stream goes on.
    let (tx, rx) = mpsc::channel(4);
    let mut answers = orders.publish_stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for (seq, topic) in [(1, "audit"), (2, "orders")] {
        let batch = Some(publish_req(topic, events(&format!("s{seq}"), 1)));
        tx.send(api::PublishStreamRequest { sequence: seq, batch }).await.unwrap();
    }
    use api::publish_stream_response::Result as R;
    let a = answers.message().await.unwrap().unwrap();
    let Some(R::Error(e)) = a.result else { panic!("{a:?}") };
    assert_eq!(Code::from_i32(e.code), Code::PermissionDenied);
    let a = answers.message().await.unwrap().unwrap();
    assert!(matches!(a.result, Some(R::Published(_))), "{a:?}");

    // What the token may do works.
    publish(&mut orders, "orders", events("o", 1)).await;
    let mut s = Consume::open(&mut orders, "orders", "billing", 10).await.unwrap();
    let got = s.receive(2).await;
    s.ack_all(&got).await;
    assert_eq!(stats(&mut orders, "orders", "billing").await.backlog, 0);

    // Nothing the refused calls asked for happened.
    let all = topic_names(&mut admin).await;
    assert_eq!(all, ["audit", "audit.archive.dlq", "orders", "orders.billing.dlq"]);
    assert_eq!(end_offset(&mut admin, "audit").await, 0);
}

// ---------------------------------------------------------------------------------------------
// Health and reflection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_and_reflection_lists_the_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let srv = TestServer::start_with_auth().await;
    let mut health = HealthClient::new(channel(&srv).await);
    for service in ["", "switchboard.v1.Switchboard"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope.v1.Nope".into() }).await;
    assert_eq!(code_of(unknown), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel(&srv).await);
    let ask = |m| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let requests = tokio_stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("switchboard.v1.Switchboard".into())),
    ]);
    let mut answers = reflection.server_reflection_info(requests).await.unwrap().into_inner();
    let ServerReflectionResponse {
        message_response: Some(MessageResponse::ListServicesResponse(list)), ..
    } = answers.message().await.unwrap().unwrap()
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["switchboard.v1.Switchboard", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]
    {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let ServerReflectionResponse {
        message_response: Some(MessageResponse::FileDescriptorResponse(files)),
        ..
    } = answers.message().await.unwrap().unwrap()
    else {
        panic!("expected file descriptors")
    };
    let files: Vec<prost_types::FileDescriptorProto> =
        files.file_descriptor_proto.iter().map(|b| prost::Message::decode(b.as_slice()).unwrap()).collect();
    let main =
        files.iter().find(|f| f.name() == "switchboard/v1/switchboard.proto").expect("the service's file");
    let methods: Vec<_> = main.service[0].method.iter().map(|m| m.name()).collect();
    for m in ["Publish", "PublishStream", "Consume", "Seek", "Redrive", "Stats"] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Python

/// The crate's `tests/python` directory and the repository's `proto` directory.
fn python_dirs() -> (PathBuf, PathBuf) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    (crate_dir.join("tests/python"), crate_dir.join("../../proto"))
}

/// A virtual environment with grpcio and grpcio-tools, created once under the target
/// directory by `python3` and reused. Panics with the reason when it cannot be built.
fn python_env(python3: &Path) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyenv-grpc");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        std::process::Command::new(python)
            .args(["-c", "import grpc, grpc_tools.protoc"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    let run = |cmd: &mut std::process::Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        std::process::Command::new(python3).args(["-m", "venv"]).arg(&venv),
        "creating a Python virtual environment (python3 -m venv; is python3-venv installed?)",
    );
    let (py_dir, _) = python_dirs();
    run(
        std::process::Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(py_dir.join("requirements.txt")),
        "installing grpcio and grpcio-tools from PyPI into the test virtual environment",
    );
    assert!(ready(&python), "grpcio installed but `import grpc, grpc_tools.protoc` still fails");
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_publishes_and_consumes() {
    let python3 = switchboard_testkit::require_service!(Python).path().to_owned();
    let python = tokio::task::spawn_blocking(move || python_env(&python3)).await.unwrap();
    let (py_dir, proto_dir) = python_dirs();
    let stubs = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_dir)
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .args(["switchboard/v1/switchboard.proto", "io/cloudevents/v1/cloudevents.proto"])
        .output()
        .unwrap();
    assert!(out.status.success(), "protoc failed: {}", String::from_utf8_lossy(&out.stderr));

    let srv = TestServer::start_with_auth().await;
    let mut c = client_as(&srv, Some(ADMIN_TOKEN)).await;
    create_topic(&mut c, "orders.py", 3).await;
    create_sub(&mut c, "orders.py", "workers", queue(None, None)).await;

    let mut client = std::process::Command::new(&python);
    client
        .arg(py_dir.join("client.py"))
        .arg("--stubs")
        .arg(stubs.path())
        .args(["--target", &srv.grpc_addr().to_string()])
        .args(["--topic", "orders.py", "--subscription", "workers", "--count", "25"])
        .args(["--token", ORDERS_TOKEN, "--timeout", "30"]);
    let out = tokio::task::spawn_blocking(move || client.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: BTreeMap<String, serde_json::Value> = serde_json::from_str(stdout.trim()).unwrap();
    let want = serde_json::json!({
        "published": 25, "duplicates": 0, "opened_credits": 25, "received": 25, "acked": 25,
        "ack_errors": [], "ids_match": true, "data_match": true, "max_attempt": 1,
    });
    assert_eq!(serde_json::to_value(&summary).unwrap(), want);

    let st = stats(&mut c, "orders.py", "workers").await;
    assert_eq!((st.backlog, st.in_flight), (0, 0));
    assert_eq!(end_offset(&mut c, "orders.py").await, 25);
}
