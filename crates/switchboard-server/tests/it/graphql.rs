//! GraphQL at `/graphql`: queries, mutations, the live tail over WebSocket
//! (graphql-transport-ws), GraphiQL, limits, auth, and bad input that changes nothing.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_broker::{SubscriptionConfig, TopicConfig};
use switchboard_core::Message;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use switchboard_testkit::{ADMIN_TOKEN, ORDERS_TOKEN, TestServer, sub, topic};

/// A GraphQL client of one test server, with an optional bearer token.
struct Gql {
    url: String,
    http: reqwest::Client,
    token: Option<&'static str>,
}

impl Gql {
    fn new(s: &TestServer) -> Gql {
        Gql {
            url: format!("{}/graphql", s.http()),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            token: None,
        }
    }

    fn with_token(s: &TestServer, token: &'static str) -> Gql {
        Gql { token: Some(token), ..Gql::new(s) }
    }

    /// Posts a request; returns the HTTP status and the body as JSON.
    async fn post(&self, query: &str, variables: Value) -> (u16, Value) {
        let mut req = self.http.post(&self.url).json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        if status == 200 {
            assert_eq!(resp.headers()["content-type"], "application/json");
        }
        (status, resp.json().await.unwrap())
    }

    /// The `data` of a request that must succeed.
    async fn data(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// The first error of a request that must fail (GraphQL's convention: HTTP 200).
    async fn error(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables).await;
        assert_eq!(status, 200, "{body}");
        let errors = body["errors"].as_array().unwrap_or_else(|| panic!("no errors in {body}"));
        errors[0].clone()
    }
}

fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no code in {error}"))
}

/// Sum of end offsets: how many messages a topic holds.
fn stored(s: &TestServer, name: &str) -> u64 {
    let info = s.server().state().broker.topic_info(&topic(name)).unwrap();
    info.partitions.iter().map(|p| p.end_offset).sum()
}

fn topic_names(s: &TestServer) -> Vec<String> {
    s.server().state().broker.topics().into_iter().map(|t| t.name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_show_topics_partitions_messages_and_subscription_counts() {
    let s = TestServer::start().await;
    let broker = s.server().state().broker.clone();
    let orders = topic("orders");
    broker.create_topic(&orders, TopicConfig { partitions: 3, ..TopicConfig::default() }).await.unwrap();
    broker.create_subscription(&orders, &sub("billing"), SubscriptionConfig::queue()).await.unwrap();
    broker.create_subscription(&orders, &sub("audit"), SubscriptionConfig::stream()).await.unwrap();
    for i in 0..5 {
        let m = Message::new("/shop", "order.created", format!("order {i}"))
            .with_id(format!("o-{i}"))
            .with_key("customer-7")
            .with_subject(format!("orders/{i}"))
            .with_extension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        broker.publish(&orders, m).await.unwrap();
    }
    // Two deliveries out, one acked: backlog 4, one in flight.
    let consumer = broker.queue_consumer(&orders, &sub("billing")).unwrap();
    let got = consumer.receive(2, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 2);
    consumer.ack(got[0].receipt.as_ref().unwrap()).await.unwrap();

    let gql = Gql::new(&s);
    let data = gql
        .data(
            r#"{
              topics {
                name
                config { partitions fsync retention { maxAgeMs untilAcked } }
                partitions { partition startOffset endOffset sizeBytes }
                publishRate
                subscriptions {
                  name mode
                  config { start leaseMs maxDeliveries deadLetterTopic }
                  stats { backlog inFlight lag scheduled deadLettered consumers partitions { partition floor backlog } }
                  deliveryRate
                }
              }
            }"#,
            json!({}),
        )
        .await;
    let topics = data["topics"].as_array().unwrap();
    let names: Vec<&str> = topics.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "orders.billing.dlq"]);
    let t = &topics[0];
    assert_eq!(
        t["config"],
        json!({"partitions": 3, "fsync": "ALWAYS", "retention": {"maxAgeMs": 604_800_000, "untilAcked": true}})
    );
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts.iter().map(|p| p["endOffset"].as_u64().unwrap()).sum::<u64>(), 5);
    let keyed = parts.iter().find(|p| p["endOffset"] == 5).expect("one key, one partition");
    assert!(keyed["sizeBytes"].as_u64().unwrap() > 0);
    // Published through the embedded broker, not an API: no rate.
    assert_eq!(t["publishRate"], 0.0);

    let subs = t["subscriptions"].as_array().unwrap();
    assert_eq!(subs[0]["name"], "audit");
    assert_eq!(subs[0]["mode"], "STREAM");
    assert_eq!(subs[0]["stats"]["backlog"], 5);
    assert_eq!(subs[0]["config"]["deadLetterTopic"], Value::Null);
    let billing = &subs[1];
    assert_eq!(billing["name"], "billing");
    assert_eq!(billing["mode"], "QUEUE");
    assert_eq!(
        billing["config"],
        json!({"start": "EARLIEST", "leaseMs": 30000, "maxDeliveries": 10, "deadLetterTopic": "orders.billing.dlq"})
    );
    let stats = &billing["stats"];
    assert_eq!(stats["backlog"], 4, "{stats}");
    assert_eq!(stats["inFlight"], 1, "{stats}");
    assert_eq!(stats["lag"], 4, "{stats}");
    assert_eq!(stats["scheduled"], 0);
    assert_eq!(stats["deadLettered"], 0);
    assert_eq!(stats["consumers"], 1);
    assert_eq!(stats["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(billing["deliveryRate"], 0.0);

    // The log itself, from an offset, as CloudEvents.
    let p = keyed["partition"].as_u64().unwrap();
    let data = gql
        .data(
            r#"query($p: Int!) { topic(name: "orders") { messages(partition: $p, offset: 3, limit: 10) {
                 partition offset publishedAt id source type specversion subject time datacontenttype
                 partitionKey extensions { name value } data dataBase64 dataSize } } }"#,
            json!({ "p": p }),
        )
        .await;
    let msgs = data["topic"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    let m = &msgs[0];
    assert_eq!(m["offset"], 3);
    assert_eq!(m["id"], "o-3");
    assert_eq!(m["source"], "/shop");
    assert_eq!(m["type"], "order.created");
    assert_eq!(m["specversion"], "1.0");
    assert_eq!(m["subject"], "orders/3");
    assert_eq!(m["time"], Value::Null);
    assert_eq!(m["partitionKey"], "customer-7");
    assert_eq!(
        m["extensions"],
        json!([{"name": "partitionkey", "value": "customer-7"},
               {"name": "traceparent", "value": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}])
    );
    assert_eq!(m["data"], "order 3");
    assert_eq!(m["dataBase64"], "b3JkZXIgMw==");
    assert_eq!(m["dataSize"], 7);
    let published_at = m["publishedAt"].as_str().unwrap();
    assert!(published_at.len() == 24 && published_at.ends_with('Z'), "{published_at}");

    // Reading moved nothing.
    let stats = broker.stats(&orders, &sub("audit")).unwrap();
    assert_eq!(stats.backlog, 5);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_create_publish_seek_redrive_and_delete() {
    let s = TestServer::start().await;
    let gql = Gql::new(&s);

    let data = gql
        .data(
            r#"mutation { createTopic(name: "orders", partitions: 2, config: { segmentBytes: 1048576, retention: { maxAgeMs: null } }) {
                 name config { partitions segmentBytes retention { maxAgeMs untilAcked } } partitions { partition endOffset } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        data["createTopic"],
        json!({"name": "orders",
               "config": {"partitions": 2, "segmentBytes": 1_048_576, "retention": {"maxAgeMs": null, "untilAcked": true}},
               "partitions": [{"partition": 0, "endOffset": 0}, {"partition": 1, "endOffset": 0}]})
    );
    // Again with the same settings: the same topic; with others: a conflict, nothing changed.
    gql.data(r#"mutation { createTopic(name: "orders", partitions: 2, config: { segmentBytes: 1048576, retention: { maxAgeMs: null } }) { name } }"#, json!({})).await;
    let e = gql.error(r#"mutation { createTopic(name: "orders", partitions: 4) { name } }"#, json!({})).await;
    assert_eq!(code(&e), "CONFLICT", "{e}");
    assert_eq!(e["extensions"]["status"], 409);
    assert_eq!(s.server().state().broker.topic_info(&topic("orders")).unwrap().partitions.len(), 2);

    let data = gql
        .data(
            r#"mutation {
                 billing: createSubscription(topic: "orders", name: "billing", config: { leaseMs: 60000, maxDeliveries: 1 }) {
                   name topic mode config { leaseMs maxDeliveries deadLetterTopic } }
                 audit: createSubscription(topic: "orders", name: "audit", mode: STREAM) { name mode config { deadLetterTopic } }
               }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        data["billing"],
        json!({"name": "billing", "topic": "orders", "mode": "QUEUE",
               "config": {"leaseMs": 60000, "maxDeliveries": 1, "deadLetterTopic": "orders.billing.dlq"}})
    );
    assert_eq!(
        data["audit"],
        json!({"name": "audit", "mode": "STREAM", "config": {"deadLetterTopic": null}})
    );
    assert_eq!(topic_names(&s), ["orders", "orders.billing.dlq"]);

    let events = json!([
        {"id": "e-1", "source": "/shop", "type": "order.created", "data": "{\"n\":1}", "datacontenttype": "application/json",
         "partitionKey": "k", "time": "2026-11-26T10:00:00Z", "extensions": [{"name": "tenant", "value": "acme"}]},
        {"id": "e-2", "source": "/shop", "type": "order.created", "dataBase64": "AP8=", "partitionKey": "k"},
        {"source": "/shop", "type": "order.paid", "partitionKey": "k"},
    ]);
    let data = gql
        .data(
            r#"mutation($events: [EventInput!]!) { publish(topic: "orders", events: $events) {
                 id partition offset publishedAt durability duplicate } }"#,
            json!({ "events": events }),
        )
        .await;
    let receipts = data["publish"].as_array().unwrap();
    assert_eq!(receipts.len(), 3);
    assert_eq!(receipts[0]["id"], "e-1");
    assert_eq!(receipts[1]["id"], "e-2");
    assert_eq!(receipts[2]["id"].as_str().unwrap().len(), 32, "a generated id");
    let p = receipts[0]["partition"].clone();
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r["partition"], p, "one key, one partition");
        assert_eq!(r["offset"], i);
        assert_eq!(r["durability"], "FSYNCED");
        assert_eq!(r["duplicate"], false);
    }
    // The same id again is a duplicate pointing at the first copy.
    let data = gql
        .data(
            r#"mutation { publish(topic: "orders", events: [{id: "e-1", source: "/shop", type: "order.created"}]) { offset duplicate } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["publish"], json!([{"offset": 0, "duplicate": true}]));
    assert_eq!(stored(&s, "orders"), 3);

    let data = gql
        .data(
            r#"query($p: Int!) { topic(name: "orders") { publishRate messages(partition: $p) { id data dataBase64 datacontenttype time extensions { name value } }
                 subscription(name: "billing") { stats { backlog } } } }"#,
            json!({ "p": p }),
        )
        .await;
    let t = &data["topic"];
    assert!(t["publishRate"].as_f64().unwrap() > 0.0, "{t}");
    assert_eq!(t["subscription"]["stats"]["backlog"], 3);
    let msgs = t["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["data"], "{\"n\":1}");
    assert_eq!(msgs[0]["datacontenttype"], "application/json");
    assert_eq!(msgs[0]["time"], "2026-11-26T10:00:00Z");
    assert_eq!(
        msgs[0]["extensions"],
        json!([{"name": "partitionkey", "value": "k"}, {"name": "tenant", "value": "acme"}])
    );
    assert_eq!(msgs[1]["dataBase64"], "AP8=");
    assert_eq!(msgs[1]["data"], "\u{0}\u{FFFD}", "lossy UTF-8");

    // Seek the stream subscription: to the end, then back to an offset, then to a time.
    let seek = r#"mutation($to: SeekTarget!) { seek(topic: "orders", subscription: "audit", to: $to) { stats { backlog } } }"#;
    let data = gql.data(seek, json!({"to": {"position": "LATEST"}})).await;
    assert_eq!(data["seek"]["stats"]["backlog"], 0);
    let data = gql.data(seek, json!({"to": {"offset": {"partition": p, "offset": 1}}})).await;
    assert_eq!(data["seek"]["stats"]["backlog"], 2);
    let data = gql.data(seek, json!({"to": {"time": "2000-01-01T00:00:00Z"}})).await;
    assert_eq!(data["seek"]["stats"]["backlog"], 3);

    // Dead-letter one message (one delivery allowed, nacked), then redrive it.
    let broker = s.server().state().broker.clone();
    let consumer = broker.queue_consumer(&topic("orders"), &sub("billing")).unwrap();
    let got = consumer.receive(1, Duration::from_secs(1)).await.unwrap();
    consumer.nack(got[0].receipt.as_ref().unwrap(), Duration::ZERO, Some("boom".into())).await.unwrap();
    let stats_query =
        r#"{ topic(name: "orders") { subscription(name: "billing") { stats { backlog deadLettered } } } }"#;
    let mut dead = 0;
    for _ in 0..100 {
        dead = gql.data(stats_query, json!({})).await["topic"]["subscription"]["stats"]["deadLettered"]
            .as_u64()
            .unwrap();
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dead, 1, "the ticker dead-letters the nacked message");
    let data = gql.data(r#"mutation { redrive(topic: "orders", subscription: "billing") }"#, json!({})).await;
    assert_eq!(data["redrive"], 1);
    let stats = gql.data(stats_query, json!({})).await;
    assert_eq!(stats["topic"]["subscription"]["stats"]["backlog"], 3, "{stats}");
    drop(consumer);

    let data = gql
        .data(
            r#"mutation { deleteSubscription(topic: "orders", name: "billing") deleteTopic(name: "orders") }"#,
            json!({}),
        )
        .await;
    assert_eq!(data, json!({"deleteSubscription": true, "deleteTopic": true}));
    assert_eq!(topic_names(&s), ["orders.billing.dlq"]);
    let e = gql.error(r#"{ topic(name: "orders") { name } }"#, json!({})).await;
    assert_eq!(code(&e), "NOT_FOUND", "{e}");
    assert_eq!(e["message"], "topic orders does not exist");
    s.shutdown().await.unwrap();
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a graphql-transport-ws socket, with `token` in the upgrade request if given.
async fn ws_connect(s: &TestServer, token: Option<&str>) -> Ws {
    let mut req = format!("ws://{}/graphql/ws", s.server().http_addr()).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    ws
}

async fn ws_send(ws: &mut Ws, msg: Value) {
    ws.send(WsMessage::text(msg.to_string())).await.unwrap();
}

/// The next protocol message (JSON), or the close frame's code if the server closed.
async fn ws_recv(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message within 10 s");
        match msg {
            Some(Ok(WsMessage::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(WsMessage::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Err(None),
        }
    }
}

/// The next message about subscription `id`, skipping any about others.
async fn ws_recv_for(ws: &mut Ws, id: &str) -> Value {
    loop {
        let msg = ws_recv(ws).await.unwrap();
        if msg["id"] == id {
            return msg;
        }
    }
}

/// Sends `connection_init` with `payload` and expects `connection_ack`.
async fn ws_init(ws: &mut Ws, payload: Value) {
    ws_send(ws, json!({"type": "connection_init", "payload": payload})).await;
    assert_eq!(ws_recv(ws).await.unwrap(), json!({"type": "connection_ack"}));
}

/// Waits until the server counts `n` open GraphQL sockets and live tails, so a test knows
/// a tail has taken its starting offsets.
async fn wait_for_open_streams(s: &TestServer, n: u32) {
    let line = format!("switchboard_connections{{api=\"graphql\"}} {n}\n");
    for _ in 0..500 {
        let text = reqwest::get(format!("{}/metrics", s.http())).await.unwrap().text().await.unwrap();
        if text.contains(&line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never counted {n} open GraphQL streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_streams_new_messages_over_graphql_transport_ws() {
    let s = TestServer::start().await;
    let broker = s.server().state().broker.clone();
    broker.create_topic(&topic("orders"), TopicConfig::default()).await.unwrap();
    broker.publish(&topic("orders"), Message::new("/shop", "old", "before the tail")).await.unwrap();

    let mut ws = ws_connect(&s, None).await;
    ws_init(&mut ws, json!({})).await;
    wait_for_open_streams(&s, 1).await;
    ws_send(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { tail(topic: \"orders\") { partition offset type data } }"}}),
    )
    .await;
    wait_for_open_streams(&s, 2).await;

    let gql = Gql::new(&s);
    for i in 0..3 {
        let q = format!(
            r#"mutation {{ publish(topic: "orders", events: [{{source: "/shop", type: "live", data: "m{i}"}}]) {{ offset }} }}"#
        );
        gql.data(&q, json!({})).await;
    }
    for i in 0..3 {
        let msg = ws_recv(&mut ws).await.unwrap();
        assert_eq!(msg["type"], "next", "{msg}");
        assert_eq!(msg["id"], "1");
        assert_eq!(
            msg["payload"]["data"]["tail"],
            json!({"partition": 0, "offset": i + 1, "type": "live", "data": format!("m{i}")})
        );
    }

    // A second tail from the start sees the old message too.
    ws_send(
        &mut ws,
        json!({"id": "2", "type": "subscribe", "payload": {
            "query": "subscription { tail(topic: \"orders\", fromEnd: false) { offset data } }"}}),
    )
    .await;
    let msg = ws_recv_for(&mut ws, "2").await;
    assert_eq!(msg["payload"]["data"]["tail"], json!({"offset": 0, "data": "before the tail"}));

    // Completing the subscriptions ends the tails.
    ws_send(&mut ws, json!({"id": "1", "type": "complete"})).await;
    ws_send(&mut ws, json!({"id": "2", "type": "complete"})).await;
    wait_for_open_streams(&s, 1).await;

    // A tail of an unknown topic fails with a coded error, then completes.
    ws_send(&mut ws, json!({"id": "3", "type": "subscribe", "payload": {"query": "subscription { tail(topic: \"nope\") { offset } }"}}))
        .await;
    let msg = ws_recv_for(&mut ws, "3").await;
    assert_eq!(msg["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{msg}");
    assert_eq!(ws_recv_for(&mut ws, "3").await, json!({"id": "3", "type": "complete"}));
    ws.close(None).await.unwrap();
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_needs_a_token_and_permission() {
    let s = TestServer::start_with_auth().await;
    let broker = s.server().state().broker.clone();
    broker.create_topic(&topic("orders"), TopicConfig::default()).await.unwrap();
    broker.create_topic(&topic("audit"), TopicConfig::default()).await.unwrap();

    // No token anywhere: the socket is closed at connection_init.
    let mut ws = ws_connect(&s, None).await;
    ws_send(&mut ws, json!({"type": "connection_init"})).await;
    assert!(ws_recv(&mut ws).await.is_err(), "closed");

    // A wrong token in the upgrade request: refused before the upgrade.
    let mut req = format!("ws://{}/graphql/ws", s.server().http_addr()).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    req.headers_mut().insert("Authorization", HeaderValue::from_static("Bearer wrong-token-0123456789"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }

    // A page of another site may not open a socket, token or not.
    let mut req = format!("ws://{}/graphql/ws", s.server().http_addr()).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    req.headers_mut().insert("Origin", HeaderValue::from_static("https://evil.example"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }

    // The token in the connection_init payload, as browsers send it: its permissions hold.
    let mut ws = ws_connect(&s, None).await;
    ws_init(&mut ws, json!({"authorization": format!("Bearer {ORDERS_TOKEN}")})).await;
    ws_send(&mut ws, json!({"id": "a", "type": "subscribe", "payload": {"query": "subscription { tail(topic: \"audit\") { offset } }"}}))
        .await;
    let msg = ws_recv(&mut ws).await.unwrap();
    assert_eq!(msg["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{msg}");
    assert_eq!(ws_recv(&mut ws).await.unwrap()["type"], "complete");

    // The token in the upgrade request works as well.
    let mut ws = ws_connect(&s, Some(ORDERS_TOKEN)).await;
    ws_init(&mut ws, json!({})).await;
    ws_send(
        &mut ws,
        json!({"id": "o", "type": "subscribe", "payload": {"query": "subscription { tail(topic: \"orders\", fromEnd: false) { data } }"}}),
    )
    .await;
    broker.publish(&topic("orders"), Message::new("/shop", "t", "hello")).await.unwrap();
    let msg = ws_recv(&mut ws).await.unwrap();
    assert_eq!(msg["payload"]["data"]["tail"]["data"], "hello", "{msg}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_sdl_and_introspection_are_served() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{}/graphql", s.http())).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("graphiql") && html.contains("/graphql/ws"), "{html}");

    let sdl =
        http.get(format!("{}/graphql/schema.graphql", s.http())).send().await.unwrap().text().await.unwrap();
    assert!(sdl.contains("type Query") && sdl.contains("tail(topic: String!"), "{sdl}");

    // GraphiQL's introspection query nests deeper than the depth limit; it still works.
    let data = Gql::new(&s).data(INTROSPECTION, json!({})).await;
    let types = data["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Topic"));
    assert_eq!(data["__schema"]["subscriptionType"]["name"], "Subscription");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_with_codes_and_change_nothing() {
    let s = TestServer::start().await;
    s.server().state().broker.create_topic(&topic("orders"), TopicConfig::default()).await.unwrap();
    let gql = Gql::new(&s);

    let e = gql.error("{ topics { name }", json!({})).await;
    assert_eq!(code(&e), "GRAPHQL_PARSE_FAILED", "{e}");
    let e = gql.error("{ topics { name colour } }", json!({})).await;
    assert_eq!(code(&e), "GRAPHQL_VALIDATION_FAILED", "{e}");
    assert!(e["message"].as_str().unwrap().contains("colour"), "{e}");
    let e = gql.error(r#"mutation { createTopic(name: "x", partitions: "two") { name } }"#, json!({})).await;
    assert_eq!(code(&e), "GRAPHQL_VALIDATION_FAILED", "{e}");

    // Deeper than 10 (introspection fields count when mixed with data fields).
    let deep = r#"{ topics { name } __type(name: "Topic") { fields { type { ofType { ofType { ofType { ofType {
                   ofType { ofType { ofType { name } } } } } } } } } } }"#;
    let e = gql.error(deep, json!({})).await;
    assert_eq!(
        (code(&e), e["message"].as_str().unwrap()),
        ("GRAPHQL_VALIDATION_FAILED", "Query is nested too deep.")
    );

    // Introspection that fans out (not a thin `ofType` chain) meets the same limit.
    let wide = r#"{ __schema { types { fields { type { ofType { fields { type { ofType { fields {
                   type { ofType { fields { type { name } } } } } } } } } } } } } }"#;
    let e = gql.error(wide, json!({})).await;
    assert_eq!(e["message"], "Query is nested too deep.");

    // More complex than 500: 300 createTopic fields, none of which runs.
    let many: String = (0..300).map(|i| format!("t{i}: createTopic(name: \"t{i}\") {{ name }}\n")).collect();
    let e = gql.error(&format!("mutation {{ {many} }}"), json!({})).await;
    assert_eq!(
        (code(&e), e["message"].as_str().unwrap()),
        ("GRAPHQL_VALIDATION_FAILED", "Query is too complex.")
    );

    let e = gql.error(r#"{ topic(name: "nope") { name } }"#, json!({})).await;
    assert_eq!(code(&e), "NOT_FOUND");
    let e =
        gql.error(r#"{ topic(name: "orders") { subscription(name: "nope") { name } } }"#, json!({})).await;
    assert_eq!(code(&e), "NOT_FOUND");
    assert_eq!(e["path"], json!(["topic", "subscription"]));
    let e = gql.error(r#"{ topic(name: "../etc") { name } }"#, json!({})).await;
    assert_eq!(code(&e), "BAD_USER_INPUT");
    assert!(e["message"].as_str().unwrap().contains("'/'"), "{e}");
    let e = gql.error(r#"mutation { createTopic(name: "bad name") { name } }"#, json!({})).await;
    assert_eq!((code(&e), &e["extensions"]["status"]), ("BAD_USER_INPUT", &json!(400)));
    let e = gql.error(r#"mutation { createTopic(name: "big", partitions: 5000) { name } }"#, json!({})).await;
    assert_eq!(code(&e), "BAD_USER_INPUT");
    let e = gql
        .error(r#"mutation { createTopic(name: "sync", config: { fsync: INTERVAL }) { name } }"#, json!({}))
        .await;
    assert_eq!(code(&e), "BAD_USER_INPUT");
    let e =
        gql.error(r#"mutation { createSubscription(topic: "nope", name: "s") { name } }"#, json!({})).await;
    assert_eq!(code(&e), "NOT_FOUND");
    let e = gql.error(r#"{ topic(name: "orders") { messages(partition: 7) { id } } }"#, json!({})).await;
    assert_eq!(code(&e), "NOT_FOUND");
    let e = gql.error(r#"{ topic(name: "orders") { messages(limit: 100000) { id } } }"#, json!({})).await;
    assert_eq!(code(&e), "BAD_USER_INPUT");
    let e = gql
        .error(
            r#"mutation { seek(topic: "orders", subscription: "s", to: {time: "yesterday"}) { name } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code(&e), "BAD_USER_INPUT");
    assert_eq!(topic_names(&s), ["orders"]);

    // Publishing: each bad event fails the whole batch before anything is stored.
    let publish =
        r#"mutation($events: [EventInput!]!) { publish(topic: "orders", events: $events) { offset } }"#;
    for (events, expected) in [
        (
            json!([{"source": "/s", "type": "ok"}, {"source": "/s", "type": "t", "extensions": [{"name": "Bad-Name", "value": "x"}]}]),
            "BAD_USER_INPUT",
        ),
        (json!([{"source": "/s", "type": "t", "data": "x", "dataBase64": "eA=="}]), "BAD_USER_INPUT"),
        (json!([{"source": "/s", "type": "t", "dataBase64": "not base64!"}]), "BAD_USER_INPUT"),
        (json!([{"source": "", "type": "t"}]), "BAD_USER_INPUT"),
        (json!([{"source": "/s", "type": "t", "time": "yesterday"}]), "BAD_USER_INPUT"),
        (json!([{"source": "/s", "type": "t", "specversion": "0.3"}]), "BAD_USER_INPUT"),
        (json!([{"source": "/s", "type": "t", "data": "x".repeat(1024 * 1024 + 1)}]), "PAYLOAD_TOO_LARGE"),
        (Value::Array(vec![json!({"source": "/s", "type": "t"}); 1001]), "PAYLOAD_TOO_LARGE"),
    ] {
        let e = gql.error(publish, json!({ "events": events })).await;
        assert_eq!(code(&e), expected, "{e}");
    }
    let e = gql
        .error(
            r#"mutation { publish(topic: "nope", events: [{source: "/s", type: "t"}]) { offset } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code(&e), "NOT_FOUND");
    assert_eq!(stored(&s, "orders"), 0);

    // Not GraphQL over HTTP at all: problems, not GraphQL responses.
    let http = reqwest::Client::new();
    let resp = http
        .post(&gql.url)
        .header("content-type", "text/plain")
        .body("{ topics { name } }")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp =
        http.post(&gql.url).header("content-type", "application/json").body("[1, 2]").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_apply() {
    let s = TestServer::start_with(|c| {
        c.limits.max_graphql_depth = 3;
        c.limits.max_graphql_complexity = 12;
    })
    .await;
    let gql = Gql::new(&s);
    gql.data("{ topics { partitions { partition } } }", json!({})).await;
    let e = gql.error("{ topics { subscriptions { stats { backlog } } } }", json!({})).await;
    assert_eq!(e["message"], "Query is nested too deep.");
    let e = gql.error("{ a: topics { name } b: topics { name } c: topics { name } d: topics { name } e: topics { name } f: topics { name } g: topics { name } }", json!({})).await;
    assert_eq!(e["message"], "Query is too complex.");
    // Introspection meets the limits too, with `ofType` chains not counted: GraphiQL's
    // query is 6 deep that way (and more complex than 12).
    gql.data("{ __schema { types { name } } }", json!({})).await;
    let e = gql.error(INTROSPECTION, json!({})).await;
    assert_eq!(code(&e), "GRAPHQL_VALIDATION_FAILED", "{e}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_permissions_are_enforced() {
    let s = TestServer::start_with_auth().await;
    let broker = s.server().state().broker.clone();
    broker.create_topic(&topic("orders"), TopicConfig::default()).await.unwrap();
    broker.create_topic(&topic("audit"), TopicConfig::default()).await.unwrap();
    broker
        .create_subscription(&topic("orders"), &sub("billing"), SubscriptionConfig::stream())
        .await
        .unwrap();

    // Missing or wrong token: HTTP 401 problem, before any GraphQL runs.
    let http = reqwest::Client::new();
    let q = json!({"query": "mutation { deleteTopic(name: \"orders\") }"});
    let resp = http.post(format!("{}/graphql", s.http())).json(&q).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = http
        .post(format!("{}/graphql", s.http()))
        .bearer_auth("wrong-token-0123456789")
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http.get(format!("{}/graphql/schema.graphql", s.http())).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // GraphiQL itself is a static page: a browser loads it without a token.
    let resp = http.get(format!("{}/graphql", s.http())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(topic_names(&s), ["audit", "orders"]);

    // The orders token sees, reads and publishes to orders* only, and administers nothing.
    let orders = Gql::with_token(&s, ORDERS_TOKEN);
    let data = orders.data("{ topics { name subscriptions { name stats { backlog } } } }", json!({})).await;
    assert_eq!(
        data,
        json!({"topics": [{"name": "orders", "subscriptions": [{"name": "billing", "stats": {"backlog": 0}}]}]})
    );
    let e = orders.error(r#"{ topic(name: "audit") { name } }"#, json!({})).await;
    assert_eq!(code(&e), "FORBIDDEN", "{e}");
    assert_eq!(e["extensions"]["status"], 403);
    // Forbidden whether or not the topic exists: no probing for names.
    let e = orders.error(r#"{ topic(name: "secret") { name } }"#, json!({})).await;
    assert_eq!(code(&e), "FORBIDDEN");
    for forbidden in [
        r#"mutation { createTopic(name: "orders2") { name } }"#,
        r#"mutation { deleteTopic(name: "orders") }"#,
        r#"mutation { createSubscription(topic: "orders", name: "s2") { name } }"#,
        r#"mutation { deleteSubscription(topic: "orders", name: "billing") }"#,
        r#"mutation { redrive(topic: "orders", subscription: "billing") }"#,
        r#"mutation { publish(topic: "audit", events: [{source: "/s", type: "t"}]) { offset } }"#,
        r#"mutation { seek(topic: "audit", subscription: "x", to: {position: LATEST}) { name } }"#,
    ] {
        let e = orders.error(forbidden, json!({})).await;
        assert_eq!(code(&e), "FORBIDDEN", "{forbidden}: {e}");
    }
    assert_eq!(topic_names(&s), ["audit", "orders"]);
    assert_eq!(broker.topic_info(&topic("orders")).unwrap().subscriptions.len(), 1);
    assert_eq!(stored(&s, "audit"), 0);
    let data = orders
        .data(
            r#"mutation { publish(topic: "orders", events: [{source: "/s", type: "t"}]) { offset } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["publish"], json!([{"offset": 0}]));

    // A queue subscription creates a dead-letter topic: admin on that topic is needed too.
    let admin = Gql::with_token(&s, ADMIN_TOKEN);
    admin
        .data(r#"mutation { createSubscription(topic: "orders", name: "email") { name } }"#, json!({}))
        .await;
    assert_eq!(topic_names(&s), ["audit", "orders", "orders.email.dlq"]);
    s.shutdown().await.unwrap();
}

/// The introspection query of graphql-js 16 (GraphiQL's), `ofType` nested nine deep.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations isRepeatable args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL isOneOf
  fields(includeDeprecated: true) {
    name description args(includeDeprecated: true) { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_graph_is_a_query_and_a_live_subscription() {
    let s = TestServer::start().await;
    let broker = s.server().state().broker.clone();
    broker.create_topic(&topic("orders"), TopicConfig::default()).await.unwrap();
    s.server().state().telemetry.with_graph(|g| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        g.observe_publish("order", "orders", 3, false, 0.002, now);
    });
    let gql = Gql::new(&s);
    let data = gql
        .data(
            "{ serviceGraph(window: FIVE_MINUTES) { window edges { id kind rate latency { p99Ms } } nodes { id kind } } }",
            json!({}),
        )
        .await;
    let graph = &data["serviceGraph"];
    assert_eq!(graph["window"], "FIVE_MINUTES");
    assert_eq!(graph["edges"][0]["id"], "publish service:order -> topic:orders");
    assert_eq!(graph["edges"][0]["kind"], "publish");
    assert!(graph["edges"][0]["latency"]["p99Ms"].as_f64().unwrap() > 0.0);
    assert!(graph["nodes"].as_array().unwrap().iter().any(|n| n["id"] == "topic:orders"));

    let mut ws = ws_connect(&s, None).await;
    ws_init(&mut ws, json!({})).await;
    ws_send(
        &mut ws,
        json!({"id": "g", "type": "subscribe", "payload": {"query": "subscription { serviceGraph { atS edges { id } } }"}}),
    )
    .await;
    let first = ws_recv_for(&mut ws, "g").await;
    assert_eq!(
        first["payload"]["data"]["serviceGraph"]["edges"][0]["id"],
        "publish service:order -> topic:orders"
    );
    // The next comes after the broker's next sample.
    let second = tokio::time::timeout(Duration::from_secs(12), ws_recv_for(&mut ws, "g"))
        .await
        .expect("a second graph");
    assert_eq!(second["type"], "next");
    ws.close(None).await.unwrap();
    s.shutdown().await.unwrap();
}
