//! REST: CloudEvents publish (binary, structured, batch, and from `curl`), long-poll receive,
//! ack/nack/extend, stream reads with commit and seek, admin, dead letters and redrive, the
//! OpenAPI document against the router, and every bad input as a problem that changes
//! nothing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use switchboard_testkit::{ADMIN_TOKEN, ORDERS_TOKEN, TestServer};

/// A client of one test server, with an optional bearer token.
struct Api {
    base: String,
    client: reqwest::Client,
    token: Option<&'static str>,
}

impl Api {
    fn new(s: &TestServer) -> Api {
        Api {
            base: s.http(),
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            token: None,
        }
    }

    fn with_token(s: &TestServer, token: &'static str) -> Api {
        Api { token: Some(token), ..Api::new(s) }
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let b = self.client.request(method, format!("{}{path}", self.base));
        match self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// Sends and returns the status and the JSON body (`null` when empty).
    async fn call(&self, b: RequestBuilder) -> (StatusCode, Value) {
        let resp = b.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        (status, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(self.req(Method::GET, path)).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(self.req(Method::POST, path).json(&body)).await
    }

    async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, resp) = self.post(path, body).await;
        assert!(status.is_success(), "POST {path}: {status} {resp}");
        resp
    }

    async fn create_topic(&self, name: &str, config: Value) {
        self.post_ok("/v1/topics", json!({ "name": name, "config": config })).await;
    }

    async fn create_sub(&self, topic: &str, name: &str, config: Value) {
        self.post_ok(&format!("/v1/topics/{topic}/subscriptions"), json!({ "name": name, "config": config }))
            .await;
    }

    /// Publishes one structured event with JSON data.
    async fn publish(&self, topic: &str, id: &str, data: Value) -> Value {
        let event = json!({ "specversion": "1.0", "id": id, "source": "/test", "type": "t", "data": data });
        let b = self
            .req(Method::POST, &format!("/v1/topics/{topic}/events"))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string());
        let (status, body) = self.call(b).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["receipts"][0].clone()
    }

    async fn receive(&self, topic: &str, sub: &str, max: usize, wait_ms: u64) -> Vec<Value> {
        let path = format!("/v1/topics/{topic}/subscriptions/{sub}/receive?max={max}&wait_ms={wait_ms}");
        let (status, body) = self.call(self.req(Method::POST, &path)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["messages"].as_array().unwrap().clone()
    }

    async fn stats(&self, topic: &str, sub: &str) -> Value {
        self.get(&format!("/v1/topics/{topic}/subscriptions/{sub}/stats")).await
    }

    /// End offsets of every topic and the stats of every subscription: what a refused
    /// request must leave untouched.
    async fn snapshot(&self) -> Value {
        let topics = self.get("/v1/topics").await;
        let mut out = Vec::new();
        for t in topics["topics"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let mut subs = Vec::new();
            for s in t["subscriptions"].as_array().unwrap() {
                subs.push(self.stats(name, s["name"].as_str().unwrap()).await);
            }
            out.push(json!({ "name": name, "partitions": t["partitions"], "stats": subs }));
        }
        Value::Array(out)
    }
}

/// Checks a problem response: status, media type, and the status inside the document.
async fn problem(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status, "{:?}", resp.headers());
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/problem+json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["type"].as_str().unwrap().starts_with("https://"), "{body}");
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{body}");
    body
}

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).unwrap()
}

fn queue(extra: Value) -> Value {
    let mut c = json!({ "mode": "queue" });
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_subscriptions_are_created_listed_inspected_and_deleted() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    let (status, topic) =
        api.post("/v1/topics", json!({ "name": "orders", "config": { "partitions": 3 } })).await;
    assert_eq!(status, StatusCode::CREATED, "{topic}");
    assert_eq!(topic["config"]["partitions"], 3);
    assert_eq!(topic["config"]["fsync"], "always", "unset fields come from the server's topic defaults");
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3);
    let (status, _) =
        api.post("/v1/topics", json!({ "name": "orders", "config": { "partitions": 3 } })).await;
    assert_eq!(status, StatusCode::OK, "the same settings again is a no-op");
    let (status, _) = api.post("/v1/topics", json!({ "name": "bare" })).await;
    assert_eq!(status, StatusCode::CREATED, "no config: the defaults");

    let (status, sub) = api
        .post("/v1/topics/orders/subscriptions", json!({ "name": "billing", "config": { "lease_ms": 5000 } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    assert_eq!(sub["config"]["mode"], "queue");
    assert_eq!(sub["config"]["lease_ms"], 5000);
    assert_eq!(sub["config"]["dead_letter_topic"], "orders.billing.dlq");
    api.create_sub("orders", "audit", json!({ "mode": "stream" })).await;

    let names: Vec<String> = api.get("/v1/topics").await["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bare", "orders", "orders.billing.dlq"]);
    let subs = api.get("/v1/topics/orders/subscriptions").await;
    assert_eq!(subs["subscriptions"].as_array().unwrap().len(), 2);
    let got = api.get("/v1/topics/orders/subscriptions/audit").await;
    assert_eq!(got["config"]["mode"], "stream");
    let stats = api.stats("orders", "billing").await;
    assert_eq!((stats["mode"].as_str(), stats["backlog"].as_u64()), (Some("queue"), Some(0)));
    assert_eq!(stats["partitions"].as_array().unwrap().len(), 3);

    let del = api.req(Method::DELETE, "/v1/topics/orders/subscriptions/audit").send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    problem(
        api.req(Method::GET, "/v1/topics/orders/subscriptions/audit").send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let del = api.req(Method::DELETE, "/v1/topics/orders").send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    problem(api.req(Method::GET, "/v1/topics/orders").send().await.unwrap(), StatusCode::NOT_FOUND).await;
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_mode_event_round_trips_through_receive_and_ack() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("orders", json!({})).await;
    api.create_sub("orders", "billing", json!({})).await;

    let data: &[u8] = b"\x00\x01binary\xff\xfe";
    let send = || {
        api.req(Method::POST, "/v1/topics/orders/events")
            .header("ce-specversion", "1.0")
            .header("ce-id", "order-1")
            .header("ce-source", "/shop/orders")
            .header("ce-type", "com.example.order.created")
            .header("ce-subject", "caf%C3%A9%20%22noir%22")
            .header("ce-time", "2026-11-26T10:00:00Z")
            .header("ce-dataschema", "https://example.com/order.json")
            .header("ce-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .header("ce-partitionkey", "customer-7")
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
    };
    let (status, body) = api.call(send()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let receipt = &body["receipts"][0];
    assert_eq!((receipt["offset"].as_u64(), receipt["duplicate"].as_bool()), (Some(0), Some(false)));
    assert_eq!(receipt["durability"], "fsynced");
    let (_, again) = api.call(send()).await;
    assert_eq!(again["receipts"][0]["duplicate"], true, "the same id is stored once");

    let got = api.receive("orders", "billing", 10, 0).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!((m["attempt"].as_u64(), m["offset"].as_u64()), (Some(1), Some(0)));
    assert!(m["lease_expires_at"].as_str().unwrap().ends_with('Z'));
    let ev = &m["event"];
    assert_eq!(ev["id"], "order-1");
    assert_eq!(ev["source"], "/shop/orders");
    assert_eq!(ev["type"], "com.example.order.created");
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["subject"], "café \"noir\"", "header values are percent-decoded");
    assert_eq!(ev["time"], "2026-11-26T10:00:00Z");
    assert_eq!(ev["dataschema"], "https://example.com/order.json");
    assert_eq!(ev["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_eq!(ev["partitionkey"], "customer-7");
    assert_eq!(ev["datacontenttype"], "application/octet-stream");
    assert_eq!(b64(ev["data_base64"].as_str().unwrap()), data, "data bytes are exact");

    let ack_path = "/v1/topics/orders/subscriptions/billing/ack";
    let resp =
        api.req(Method::POST, ack_path).json(&json!({ "receipt": m["receipt"] })).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.stats("orders", "billing").await["backlog"], 0);
    let again =
        api.req(Method::POST, ack_path).json(&json!({ "receipt": m["receipt"] })).send().await.unwrap();
    problem(again, StatusCode::NOT_FOUND).await;
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_events_carry_json_text_or_base64_data() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({})).await;
    let events = [
        json!({ "specversion": "1.0", "id": "json", "source": "/s", "type": "t", "data": { "total": 42, "items": [1, 2] },
                "priority": 5, "urgent": true }),
        json!({ "specversion": "1.0", "id": "text", "source": "/s", "type": "t", "datacontenttype": "text/plain",
                "data": "hello, world" }),
        json!({ "specversion": "1.0", "id": "bin", "source": "/s", "type": "t", "datacontenttype": "image/png",
                "data_base64": "iVBORw0KGgo=" }),
    ];
    for e in &events {
        let b = api
            .req(Method::POST, "/v1/topics/t/events")
            .header("content-type", "application/cloudevents+json; charset=utf-8")
            .body(e.to_string());
        assert_eq!(api.call(b).await.0, StatusCode::OK);
    }
    let got = api.receive("t", "q", 10, 0).await;
    assert_eq!(got.len(), 3);
    let by_id = |id: &str| got.iter().find(|m| m["event"]["id"] == id).unwrap()["event"].clone();
    let j = by_id("json");
    assert_eq!(j["data"], json!({ "total": 42, "items": [1, 2] }));
    assert_eq!(j["datacontenttype"], "application/json", "JSON data defaults its content type");
    assert_eq!((j["priority"].as_str(), j["urgent"].as_str()), (Some("5"), Some("true")));
    assert_eq!(by_id("text")["data"], "hello, world");
    let bin = by_id("bin");
    assert_eq!(bin["data_base64"], "iVBORw0KGgo=");
    assert!(bin.get("data").is_none());
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_in_order_and_acked_with_results_per_receipt() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({})).await;
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({ "specversion": "1.0", "id": format!("e{i}"), "source": "/s", "type": "t", "data": i }))
        .collect();
    let b = api
        .req(Method::POST, "/v1/topics/t/events")
        .header("content-type", "application/cloudevents-batch+json")
        .body(Value::Array(batch).to_string());
    let (status, body) = api.call(b).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offsets: Vec<u64> =
        body["receipts"].as_array().unwrap().iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [0, 1, 2]);

    let got = api.receive("t", "q", 10, 0).await;
    let ids: Vec<&str> = got.iter().map(|m| m["event"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e0", "e1", "e2"]);
    let mut receipts: Vec<Value> = got.iter().map(|m| m["receipt"].clone()).collect();
    receipts.push(json!("0.99.1"));
    let body = api.post_ok("/v1/topics/t/subscriptions/q/ack", json!({ "receipts": receipts })).await;
    assert_eq!(body["acked"], 3);
    let statuses: Vec<u64> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200, 404]);
    assert_eq!(api.stats("t", "q").await["backlog"], 0);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_waits_and_wakes_on_a_publish() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({})).await;
    let poll = {
        let (base, client) = (api.base.clone(), api.client.clone());
        tokio::spawn(async move {
            let url = format!("{base}/v1/topics/t/subscriptions/q/receive?max=5&wait_ms=15000");
            client.post(url).send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "the poll waits while there is nothing");
    api.publish("t", "late", json!("x")).await;
    let body = poll.await.unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["event"]["id"], "late");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_does_not_hold_shutdown_back() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({})).await;
    let poll = {
        let (base, client) = (api.base.clone(), api.client.clone());
        tokio::spawn(async move {
            let url = format!("{base}/v1/topics/t/subscriptions/q/receive?wait_ms=20000");
            client.post(url).send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Well under the 20 s the poll asked for, even on a slow machine.
    tokio::time::timeout(Duration::from_secs(10), s.shutdown()).await.unwrap().unwrap();
    let body = poll.await.unwrap();
    assert!(body["messages"].as_array().unwrap().is_empty(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_empty_when_the_wait_runs_out() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({})).await;
    assert!(api.receive("t", "q", 10, 150).await.is_empty());
    // Held back by deliver_at: not delivered yet, counted as scheduled.
    let b = api
        .req(Method::POST, "/v1/topics/t/events?deliver_at=4102444800000")
        .header("ce-specversion", "1.0")
        .header("ce-id", "later")
        .header("ce-source", "/s")
        .header("ce-type", "t");
    assert_eq!(api.call(b).await.0, StatusCode::OK);
    assert!(api.receive("t", "q", 10, 100).await.is_empty());
    assert_eq!(api.stats("t", "q").await["scheduled"], 1);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_a_delay_redelivers_later_and_extend_moves_the_lease() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({ "lease_ms": 10_000 })).await;
    api.publish("t", "m", json!(1)).await;

    let first = api.receive("t", "q", 1, 0).await.remove(0);
    let expires = first["lease_expires_at"].as_str().unwrap().to_owned();
    let ext = api
        .post_ok(
            "/v1/topics/t/subscriptions/q/extend",
            json!({ "receipt": first["receipt"], "by_ms": 600_000 }),
        )
        .await;
    assert!(ext["lease_expires_at"].as_str().unwrap() > expires.as_str(), "{ext} vs {expires}");

    let (status, _) = api
        .post("/v1/topics/t/subscriptions/q/nack", json!({ "receipt": first["receipt"], "delay_ms": 1000 }))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(api.receive("t", "q", 1, 0).await.is_empty(), "held back for the delay");
    let again = api.receive("t", "q", 1, 10_000).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["attempt"], 2);
    assert_ne!(again[0]["receipt"], first["receipt"]);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_read_from_an_offset_committed_and_sought() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("log", json!({})).await;
    api.create_sub("log", "audit", json!({ "mode": "stream" })).await;
    api.create_sub("log", "work", json!({})).await;
    for i in 0..5 {
        api.publish("log", &format!("m{i}"), json!(i)).await;
    }
    let offsets = |body: &Value| -> Vec<u64> {
        body["messages"].as_array().unwrap().iter().map(|m| m["offset"].as_u64().unwrap()).collect()
    };
    let page = api.get("/v1/topics/log/partitions/0/messages?offset=2&max=2").await;
    assert_eq!(offsets(&page), [2, 3]);
    assert_eq!(page["next_offset"], 4);
    assert_eq!(page["messages"][0]["event"]["data"], 2);
    assert_eq!(offsets(&api.get("/v1/topics/log/partitions/0/messages").await), [0, 1, 2, 3, 4]);

    let sub = "/v1/topics/log/subscriptions/audit";
    assert_eq!(offsets(&api.get(&format!("{sub}/messages")).await), [0, 1, 2, 3, 4]);
    assert_eq!(offsets(&api.get(&format!("{sub}/messages?max=2")).await), [0, 1], "reading does not move");
    let (status, _) = api.post(&format!("{sub}/commit"), json!({ "partition": 0, "offset": 3 })).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(offsets(&api.get(&format!("{sub}/messages")).await), [3, 4]);
    assert_eq!(api.stats("log", "audit").await["backlog"], 2);

    for (to, expected) in [
        (json!("earliest"), vec![0, 1, 2, 3, 4]),
        (json!({ "partition": 0, "offset": 4 }), vec![4]),
        (json!("latest"), vec![]),
        (json!({ "time": "2000-01-01T00:00:00Z" }), vec![0, 1, 2, 3, 4]),
    ] {
        let (status, body) = api.post(&format!("{sub}/seek"), json!({ "to": to })).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{to}: {body}");
        assert_eq!(offsets(&api.get(&format!("{sub}/messages")).await), expected, "after seeking to {to}");
    }
    let wrong = api.req(Method::GET, "/v1/topics/log/subscriptions/work/messages").send().await.unwrap();
    problem(wrong, StatusCode::CONFLICT).await;
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", queue(json!({ "max_deliveries": 1 }))).await;
    api.create_sub("t", "other", json!({})).await;
    api.publish("t", "poison", json!({ "bad": true })).await;
    let m = api.receive("t", "q", 1, 0).await.remove(0);
    let (status, _) = api
        .post("/v1/topics/t/subscriptions/q/nack", json!({ "receipt": m["receipt"], "error": "boom" }))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The broker's ticker moves it to the dead-letter topic.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let body = api.get("/v1/topics/t/subscriptions/q/deadletters").await;
        if !body["messages"].as_array().unwrap().is_empty() {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(letters["dead_letter_topic"], "t.q.dlq");
    let dl = &letters["messages"][0];
    assert_eq!((dl["reason"].as_str(), dl["error"].as_str()), (Some("nacked"), Some("boom")), "{dl}");
    assert_eq!(
        (dl["attempts"].as_u64(), dl["partition"].as_u64(), dl["source_offset"].as_u64()),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(dl["event"]["id"], "poison");
    assert!(dl["event"].get("dlreason").is_none(), "metadata is lifted out of the event");
    assert_eq!(api.stats("t", "q").await["dead_lettered"], 1);

    let moved = api.post_ok("/v1/topics/t/subscriptions/q/redrive", json!({ "max": 10 })).await;
    assert_eq!(moved["moved"], 1);
    let after = api.get("/v1/topics/t/subscriptions/q/deadletters").await;
    assert!(after["messages"].as_array().unwrap().is_empty(), "{after}");
    let back = api.receive("t", "q", 1, 5000).await;
    assert_eq!(back[0]["event"]["id"], "poison");
    assert_eq!(api.receive("t", "other", 10, 0).await.len(), 1, "other subscriptions do not see it again");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_publishes_a_binary_mode_cloudevent() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({})).await;
    let url = format!("{}/v1/topics/t/events", s.http());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["--silent", "--show-error", "--fail-with-body", "-X", "POST", &url])
            .args(["-H", "ce-specversion: 1.0", "-H", "ce-id: curl-1", "-H", "ce-source: /curl"])
            .args(["-H", "ce-type: com.example.curl", "-H", "ce-myext: hi%20there"])
            .args(["-H", "Content-Type: text/plain", "--data-binary", "hello from curl"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["receipts"][0]["offset"], 0, "{body}");
    let got = api.receive("t", "q", 1, 0).await;
    let ev = &got[0]["event"];
    assert_eq!((ev["id"].as_str(), ev["type"].as_str()), (Some("curl-1"), Some("com.example.curl")));
    assert_eq!((ev["data"].as_str(), ev["myext"].as_str()), (Some("hello from curl"), Some("hi there")));
    s.shutdown().await.unwrap();
}

/// A well-formed body for the operations that take one, by `operationId` (names of the
/// `oa` topic's fixtures). Each must name an operation the document lists (checked at the
/// end), so this cannot go stale silently.
fn sample_body(operation: &str) -> Option<(&'static str, Value)> {
    const JSON: &str = "application/json";
    Some(match operation {
        "createTopic" => (JSON, json!({ "name": "oa-new" })),
        "createSubscription" => (JSON, json!({ "name": "q-new" })),
        "publish" => (
            "application/cloudevents+json",
            json!({ "specversion": "1.0", "id": "oa-1", "source": "/t", "type": "t", "data": 1 }),
        ),
        "receive" => (JSON, json!({ "max": 1 })),
        "ack" | "nack" => (JSON, json!({ "receipt": "0-0-1" })),
        "extend" => (JSON, json!({ "receipt": "0-0-1", "by_ms": 1000 })),
        "commit" => (JSON, json!({ "partition": 0, "offset": 0 })),
        "seek" => (JSON, json!({ "to": "earliest" })),
        "exportTraces" => (JSON, json!({ "resourceSpans": [] })),
        _ => return None,
    })
}

/// The operations that [`sample_body`] knows.
const WITH_SAMPLE_BODY: [&str; 10] = [
    "createTopic",
    "createSubscription",
    "publish",
    "receive",
    "ack",
    "nack",
    "extend",
    "commit",
    "seek",
    "exportTraces",
];

/// The media type of a response, without parameters.
fn media_type(resp: &Response) -> Option<String> {
    let ct = resp.headers().get("content-type")?.to_str().ok()?;
    Some(ct.split(';').next().unwrap_or("").trim().to_owned())
}

/// The operations the server documents at `/openapi.json` (whose paths a unit test checks
/// against the router's route table) are the list of routes: each is called, and must answer
/// as documented: a documented status, the documented media type on success, a problem
/// document on failure, and `invalid-name` for a bad topic in its path. A route missing from
/// the router answers "no route"; one under the wrong method answers 405; one wired to
/// another handler mostly answers fields its schema does not list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let s = TestServer::start().await;
    let api = Api::new(&s);
    let doc = api.get("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
            if path.starts_with("/v1") {
                assert!(op["responses"].get("401").is_some(), "{method} {path} documents its problems");
            }
            operations.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    assert!(operations.len() > 20, "{} operations", operations.len());

    // What "no such route" looks like, to tell it apart from a handler's 404.
    let missing =
        problem(api.req(Method::GET, "/v1/nothing/here").send().await.unwrap(), StatusCode::NOT_FOUND).await;
    let no_route_type = missing["type"].clone();
    problem(api.req(Method::PUT, "/v1/topics").send().await.unwrap(), StatusCode::METHOD_NOT_ALLOWED).await;

    api.create_topic("oa", json!({})).await;
    api.create_sub("oa", "q", queue(json!({ "max_deliveries": 3 }))).await;
    // Deletes last, the subscription before its topic.
    operations.sort_by_key(|(m, p, _)| (m == "DELETE", std::cmp::Reverse(p.len())));
    for (method, path, op) in &operations {
        let id = op["operationId"].as_str().unwrap_or(path);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let documented = |status: StatusCode| op["responses"].get(status.as_str()).cloned();
        let send = |topic: &str| {
            let url = path.replace("{topic}", topic).replace("{sub}", "q").replace("{partition}", "0");
            let mut b = api.req(method.clone(), &url);
            if let Some((ct, body)) = sample_body(id) {
                b = b.header("content-type", ct).body(body.to_string());
            }
            b.send()
        };

        let resp = send("oa").await.unwrap();
        let status = resp.status();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{id}: {method} {path} is not routed for this method"
        );
        let Some(response) = documented(status) else {
            panic!("{id}: {method} {path} answered {status}, which it does not document");
        };
        if status.is_success() {
            // The media type the document promises, if it promises one, and a body whose
            // fields the schema lists (so a route wired to another handler shows).
            if let Some(content) = response["content"].as_object() {
                let got = media_type(&resp);
                assert!(
                    got.as_deref().is_some_and(|m| content.contains_key(m)),
                    "{id}: {got:?} for {status}"
                );
                let schema = &content[got.as_deref().unwrap()]["schema"];
                let schema = match schema["$ref"].as_str() {
                    Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap(),
                    None => schema,
                };
                let body: Value = resp.json().await.unwrap();
                if let (Some(fields), Some(properties)) = (body.as_object(), schema["properties"].as_object())
                {
                    for field in fields.keys() {
                        assert!(
                            properties.contains_key(field),
                            "{id}: `{field}` is not in the documented schema"
                        );
                    }
                }
            }
        } else {
            let body = problem(resp, status).await;
            assert_ne!(body["type"], no_route_type, "{id}: {method} {path} is documented but not routed");
        }

        if path.contains("{topic}") {
            let resp = send("-bad").await.unwrap();
            assert!(documented(StatusCode::BAD_REQUEST).is_some(), "{id}: 400 is not documented");
            let body = problem(resp, StatusCode::BAD_REQUEST).await;
            assert_eq!(body["type"], "https://switchboard.dev/problems/invalid-name", "{id}: {body}");
        }
    }
    for id in WITH_SAMPLE_BODY {
        assert!(sample_body(id).is_some(), "{id}: no sample body");
        assert!(
            operations.iter().any(|(_, _, op)| op["operationId"] == id),
            "{id}: a sample body, no operation"
        );
    }
    s.shutdown().await.unwrap();
}

/// One request that must be refused.
struct Bad {
    what: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
    status: StatusCode,
}

const BINARY: &[(&str, &str)] = &[
    ("ce-specversion", "1.0"),
    ("ce-id", "x"),
    ("ce-source", "/s"),
    ("ce-type", "t"),
    ("content-type", "text/plain"),
];
const STRUCTURED: &[(&str, &str)] = &[("content-type", "application/cloudevents+json")];
const BATCH: &[(&str, &str)] = &[("content-type", "application/cloudevents-batch+json")];
const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

fn bad(
    what: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: impl Into<Vec<u8>>,
    status: u16,
) -> Bad {
    Bad { what, method, path, headers, body: body.into(), status: StatusCode::from_u16(status).unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_problem_that_changes_nothing() {
    let s = TestServer::start_with(|c| {
        c.limits.max_message_bytes = 4096;
        c.limits.max_request_bytes = 64 * 1024;
        c.limits.max_batch_messages = 3;
    })
    .await;
    let api = Api::new(&s);
    api.create_topic("t", json!({})).await;
    api.create_sub("t", "q", json!({ "lease_ms": 300 })).await;
    api.create_sub("t", "st", json!({ "mode": "stream" })).await;
    api.publish("t", "existing", json!(1)).await;
    let event = |extra: &str| format!(r#"{{"specversion":"1.0","id":"a","source":"/s","type":"t"{extra}}}"#);
    let missing_id: &[(&str, &str)] = &[("ce-specversion", "1.0"), ("ce-source", "/s"), ("ce-type", "t")];
    let bad_spec: &[(&str, &str)] =
        &[("ce-specversion", "0.3"), ("ce-id", "x"), ("ce-source", "/s"), ("ce-type", "t")];
    let bad_time: &[(&str, &str)] = &[
        ("ce-specversion", "1.0"),
        ("ce-id", "x"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("ce-time", "yesterday"),
    ];
    let bad_ext: &[(&str, &str)] = &[
        ("ce-specversion", "1.0"),
        ("ce-id", "x"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("ce-my-ext", "1"),
    ];
    let bad_escape: &[(&str, &str)] = &[
        ("ce-specversion", "1.0"),
        ("ce-id", "x"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("ce-subject", "100%"),
    ];
    let post = Method::POST;
    let cases = vec![
        bad("unknown topic", post.clone(), "/v1/topics/nope/events", BINARY, "x", 404),
        bad("unknown subscription", post.clone(), "/v1/topics/t/subscriptions/nope/receive", &[], "", 404),
        bad("unknown topic info", Method::GET, "/v1/topics/nope", &[], "", 404),
        bad("unknown partition", Method::GET, "/v1/topics/t/partitions/7/messages", &[], "", 404),
        bad("invalid topic name", post.clone(), "/v1/topics/bad!name/events", BINARY, "x", 400),
        bad("invalid name on create", post.clone(), "/v1/topics", JSON, r#"{"name":"../etc"}"#, 400),
        bad("invalid subscription name", Method::GET, "/v1/topics/t/subscriptions/-x/stats", &[], "", 400),
        bad("oversize message", post.clone(), "/v1/topics/t/events", BINARY, vec![b'x'; 5000], 413),
        bad("oversize body", post.clone(), "/v1/topics/t/events", BINARY, vec![b'x'; 100_000], 413),
        bad(
            "oversize batch",
            post.clone(),
            "/v1/topics/t/events",
            BATCH,
            format!("[{0},{0},{0},{0}]", event("")),
            413,
        ),
        bad("malformed structured JSON", post.clone(), "/v1/topics/t/events", STRUCTURED, "{not json", 400),
        bad("malformed batch JSON", post.clone(), "/v1/topics/t/events", BATCH, "[{", 400),
        bad("batch that is not an array", post.clone(), "/v1/topics/t/events", BATCH, event(""), 400),
        bad("malformed admin JSON", post.clone(), "/v1/topics", JSON, "{", 400),
        bad(
            "unknown config field",
            post.clone(),
            "/v1/topics",
            JSON,
            r#"{"name":"x","config":{"partitons":2}}"#,
            400,
        ),
        bad(
            "invalid config value",
            post.clone(),
            "/v1/topics",
            JSON,
            r#"{"name":"x","config":{"partitions":0}}"#,
            400,
        ),
        bad(
            "existing topic, other config",
            post.clone(),
            "/v1/topics",
            JSON,
            r#"{"name":"t","config":{"partitions":2}}"#,
            409,
        ),
        bad("malformed ack JSON", post.clone(), "/v1/topics/t/subscriptions/q/ack", JSON, "[", 400),
        bad("missing ce-id", post.clone(), "/v1/topics/t/events", missing_id, "x", 400),
        bad("bad specversion", post.clone(), "/v1/topics/t/events", bad_spec, "x", 400),
        bad("bad ce-time", post.clone(), "/v1/topics/t/events", bad_time, "x", 400),
        bad("bad extension name", post.clone(), "/v1/topics/t/events", bad_ext, "x", 400),
        bad("broken percent-encoding", post.clone(), "/v1/topics/t/events", bad_escape, "x", 400),
        bad(
            "structured without source",
            post.clone(),
            "/v1/topics/t/events",
            STRUCTURED,
            r#"{"specversion":"1.0","id":"a","type":"t"}"#,
            400,
        ),
        bad(
            "structured bad specversion",
            post.clone(),
            "/v1/topics/t/events",
            STRUCTURED,
            event("").replace("1.0", "2.0"),
            400,
        ),
        bad(
            "data and data_base64",
            post.clone(),
            "/v1/topics/t/events",
            STRUCTURED,
            event(r#","data":1,"data_base64":"AA==""#),
            400,
        ),
        bad("bad deliver_at", post.clone(), "/v1/topics/t/events?deliver_at=soon", BINARY, "x", 400),
        bad(
            "not a CloudEvent",
            post.clone(),
            "/v1/topics/t/events",
            &[("content-type", "text/plain")],
            "x",
            415,
        ),
        bad(
            "unsupported event format",
            post.clone(),
            "/v1/topics/t/events",
            &[("content-type", "application/cloudevents+xml")],
            "<e/>",
            415,
        ),
        bad(
            "unknown receipt",
            post.clone(),
            "/v1/topics/t/subscriptions/q/ack",
            JSON,
            r#"{"receipt":"0.0.999"}"#,
            404,
        ),
        bad(
            "garbage receipt",
            post.clone(),
            "/v1/topics/t/subscriptions/q/nack",
            JSON,
            r#"{"receipt":"zzz"}"#,
            404,
        ),
        bad(
            "extend by nothing",
            post.clone(),
            "/v1/topics/t/subscriptions/q/extend",
            JSON,
            r#"{"receipt":"0.0.1","by_ms":0}"#,
            400,
        ),
        bad("max out of range", Method::POST, "/v1/topics/t/subscriptions/q/receive?max=0", &[], "", 400),
        bad(
            "empty batch",
            Method::POST,
            "/v1/topics/t/events",
            &[("content-type", "application/cloudevents-batch+json")],
            "[]",
            400,
        ),
        bad("max not a number", Method::POST, "/v1/topics/t/subscriptions/q/receive?max=lots", &[], "", 400),
        bad(
            "receive by GET (a lease is a change)",
            Method::GET,
            "/v1/topics/t/subscriptions/q/receive",
            &[],
            "",
            405,
        ),
        bad("partition not a number", Method::GET, "/v1/topics/t/partitions/first/messages", &[], "", 400),
        bad(
            "commit beyond the end",
            post.clone(),
            "/v1/topics/t/subscriptions/st/commit",
            JSON,
            r#"{"partition":0,"offset":99}"#,
            400,
        ),
        bad(
            "seek nowhere",
            post.clone(),
            "/v1/topics/t/subscriptions/st/seek",
            JSON,
            r#"{"to":"middle"}"#,
            400,
        ),
        bad("receive from a stream", post.clone(), "/v1/topics/t/subscriptions/st/receive", &[], "", 409),
        bad("no dead-letter topic", Method::GET, "/v1/topics/t/subscriptions/st/deadletters", &[], "", 404),
        bad("unknown route", Method::GET, "/v1/topics/t/nonsense", &[], "", 404),
        bad("wrong method", Method::PATCH, "/v1/topics/t", &[], "", 405),
    ];
    for case in cases {
        let before = api.snapshot().await;
        let mut b = api.req(case.method.clone(), case.path).body(case.body.clone());
        for (k, v) in case.headers {
            b = b.header(*k, *v);
        }
        let resp = b.send().await.unwrap();
        assert_eq!(resp.status(), case.status, "{}", case.what);
        problem(resp, case.status).await;
        assert_eq!(api.snapshot().await, before, "{} changed something", case.what);
    }

    // An expired lease: 410 for ack, nack and extend, and nothing changes.
    let m = api.receive("t", "q", 1, 0).await.remove(0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = api.snapshot().await;
    for (op, body) in [
        ("ack", json!({ "receipt": m["receipt"] })),
        ("nack", json!({ "receipt": m["receipt"] })),
        ("extend", json!({ "receipt": m["receipt"], "by_ms": 1000 })),
    ] {
        let resp = api
            .req(Method::POST, &format!("/v1/topics/t/subscriptions/q/{op}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        problem(resp, StatusCode::GONE).await;
    }
    assert_eq!(api.snapshot().await, before);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_permissions_are_checked_before_anything_happens() {
    let s = TestServer::start_with_auth().await;
    let admin = Api::with_token(&s, ADMIN_TOKEN);
    let orders = Api::with_token(&s, ORDERS_TOKEN);
    let anonymous = Api::new(&s);
    let wrong = Api::with_token(&s, "not-a-token-0123456789");
    admin.create_topic("orders", json!({})).await;
    admin.create_topic("audit", json!({})).await;
    admin.create_sub("orders", "q", json!({})).await;

    let publish = |api: &Api, topic: &str| {
        api.req(Method::POST, &format!("/v1/topics/{topic}/events"))
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-source", "/s")
            .header("ce-type", "t")
            .body("x")
    };
    let cases: Vec<(&str, RequestBuilder, StatusCode)> = vec![
        ("missing token", publish(&anonymous, "orders"), StatusCode::UNAUTHORIZED),
        ("wrong token", publish(&wrong, "orders"), StatusCode::UNAUTHORIZED),
        ("wrong token, admin", wrong.req(Method::GET, "/v1/topics"), StatusCode::UNAUTHORIZED),
        ("forbidden topic", publish(&orders, "audit"), StatusCode::FORBIDDEN),
        (
            "forbidden admin",
            orders.req(Method::POST, "/v1/topics").json(&json!({ "name": "orders2" })),
            StatusCode::FORBIDDEN,
        ),
        ("forbidden delete", orders.req(Method::DELETE, "/v1/topics/orders"), StatusCode::FORBIDDEN),
        (
            "forbidden before parsing",
            orders
                .req(Method::POST, "/v1/topics/audit/events")
                .header("content-type", STRUCTURED[0].1)
                .body("{"),
            StatusCode::FORBIDDEN,
        ),
        (
            "forbidden redrive",
            orders.req(Method::POST, "/v1/topics/orders/subscriptions/q/redrive"),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, req, status) in cases {
        let before = admin.snapshot().await;
        let resp = req.send().await.unwrap();
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(resp.headers().get("www-authenticate").unwrap(), "Bearer", "{what}");
        }
        problem(resp, status).await;
        assert_eq!(admin.snapshot().await, before, "{what} changed something");
    }

    // Allowed: publish and consume on orders*; the topic list shows only what a token administers.
    assert_eq!(orders.call(publish(&orders, "orders")).await.0, StatusCode::OK);
    assert_eq!(orders.receive("orders", "q", 1, 0).await.len(), 1);
    assert!(orders.get("/v1/topics").await["topics"].as_array().unwrap().is_empty());
    assert_eq!(admin.get("/v1/topics").await["topics"].as_array().unwrap().len(), 3);
    s.shutdown().await.unwrap();
}
