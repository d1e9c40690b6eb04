//! The order service's REST API: placing with an `Idempotency-Key`, reading, listing,
//! editing, canceling; the events on the `orders` log; bad input refused with problems.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::{Start, SubscriptionName, SubscriptionSpec, TopicName};

use crate::harness::RunningOrders;

fn order_body(customer: &str, lines: &[(&str, i64)]) -> Value {
    json!({
        "customer": customer,
        "lines": lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect::<Vec<_>>(),
    })
}

async fn problem(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "{kind}");
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert_eq!(content_type, "application/problem+json", "{kind}");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().expect("type").ends_with(kind), "{body} should be a {kind}");
    assert!(!body["detail"].as_str().expect("detail").is_empty());
    body
}

macro_rules! order_cases {
    ($db:ident, $open:expr) => {
        mod $db {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_placed_order_reads_back_lists_and_goes_on_the_orders_log() {
                let (pool, _guard) = $open;
                let shop = RunningOrders::start(pool).await;
                let placed = shop
                    .http
                    .post(shop.url("/orders"))
                    .json(&order_body("ada@example.com", &[("tea-sencha", 2), ("mug-stoneware", 1), ("tea-sencha", 1)]))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(placed.status().as_u16(), 201);
                let location = placed.headers()["location"].to_str().expect("location").to_owned();
                let order: Value = placed.json().await.expect("json");
                let id = order["id"].as_str().expect("id").to_owned();
                assert_eq!(location, format!("/orders/{id}"));
                assert_eq!(order["status"], "pending");
                assert_eq!(order["total_cents"], 3 * 890 + 1450, "priced from the catalog, repeated skus merged");
                assert_eq!(order["lines"].as_array().expect("lines").len(), 2);

                let fetched: Value = shop.http.get(shop.url(&location)).send().await.expect("get").json().await.expect("json");
                assert_eq!(fetched, order);
                shop.service.list().wait_for(shop.service.store.head().await.expect("head")).await.expect("projected");
                let page: Value = shop.http.get(shop.url("/orders")).send().await.expect("list").json().await.expect("json");
                assert_eq!(page["orders"].as_array().expect("orders").len(), 1);
                assert_eq!(page["orders"][0]["id"], id.as_str());

                let spec = SubscriptionSpec::stream(SubscriptionName::from_static("audit")).with_start(Start::Earliest);
                let mut log = shop.bus.subscribe(&TopicName::from_static("orders"), spec).await.expect("subscribe");
                let delivery = switchboard_testkit::next_within(&mut log, Duration::from_secs(10)).await.expect("on the log");
                let m = delivery.message();
                assert_eq!((m.ty.as_str(), m.source.as_str()), ("order.created", "/shop/order"));
                assert_eq!(m.subject.as_deref(), Some(format!("order-{id}").as_str()));
                let data: Value = serde_json::from_slice(&m.data).expect("json");
                assert_eq!(data["customer"], "ada@example.com");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_same_post_with_the_same_idempotency_key_creates_one_order_and_the_same_answer() {
                let (pool, _guard) = $open;
                let shop = RunningOrders::start(pool).await;
                let body = order_body("bo@example.com", &[("teapot-cast-iron", 1)]);
                let post = |key: &'static str, body: Value| {
                    let (http, url) = (shop.http.clone(), shop.url("/orders"));
                    async move { http.post(url).header("Idempotency-Key", key).json(&body).send().await.expect("post") }
                };
                let first = post("checkout-1", body.clone()).await;
                assert_eq!(first.status().as_u16(), 201);
                let first: Value = first.json().await.expect("json");
                let again = post("checkout-1", body.clone()).await;
                assert_eq!(again.status().as_u16(), 201);
                assert_eq!(again.json::<Value>().await.expect("json"), first, "the same answer");
                let racing: Vec<_> = (0..6).map(|_| tokio::spawn(post("checkout-2", body.clone()))).collect();
                let mut ids = std::collections::BTreeSet::new();
                for task in racing {
                    let response = task.await.expect("task");
                    match response.status().as_u16() {
                        201 => { ids.insert(response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned()); }
                        409 => { problem(response, 409, "request-in-progress").await; }
                        other => panic!("unexpected {other}"),
                    }
                }
                assert_eq!(ids.len(), 1, "racing requests with one key make one order");
                let reused = post("checkout-1", order_body("bo@example.com", &[("teapot-cast-iron", 2)])).await;
                problem(reused, 422, "idempotency-key-reused").await;
                let bad_key = shop.http.post(shop.url("/orders")).header("Idempotency-Key", "has space").json(&body).send().await.expect("post");
                problem(bad_key, 400, "bad-idempotency-key").await;

                shop.service.list().wait_for(shop.service.store.head().await.expect("head")).await.expect("projected");
                let page: Value = shop.http.get(shop.url("/orders")).send().await.expect("list").json().await.expect("json");
                assert_eq!(page["orders"].as_array().expect("orders").len(), 2, "two keys, two orders");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_order_is_edited_and_canceled_until_it_is_final() {
                let (pool, _guard) = $open;
                let shop = RunningOrders::start(pool).await;
                let order: Value = shop.http.post(shop.url("/orders")).json(&order_body("cy@example.com", &[("tea-earl-grey", 1)]))
                    .send().await.expect("post").json().await.expect("json");
                let id = order["id"].as_str().expect("id");
                let edited = shop.http.put(shop.url(&format!("/orders/{id}/lines")))
                    .json(&json!({"lines": [{"sku": "kettle-gooseneck", "quantity": 1}]})).send().await.expect("edit");
                assert_eq!(edited.status().as_u16(), 200);
                let edited: Value = edited.json().await.expect("json");
                assert_eq!((edited["total_cents"].as_i64(), edited["version"].as_u64()), (Some(7900), Some(2)));
                let cancel = |reason: &'static str| shop.http.post(shop.url(&format!("/orders/{id}/cancel"))).json(&json!({"reason": reason})).send();
                let canceled: Value = cancel("changed my mind").await.expect("cancel").json().await.expect("json");
                assert_eq!((canceled["status"].as_str(), canceled["cancel_reason"].as_str()), (Some("canceled"), Some("changed my mind")));
                let twice: Value = cancel("again").await.expect("cancel").json().await.expect("json");
                assert_eq!(twice["version"], 3, "canceling a canceled order changes nothing");
                let late = shop.http.put(shop.url(&format!("/orders/{id}/lines")))
                    .json(&json!({"lines": [{"sku": "tea-sencha", "quantity": 1}]})).send().await.expect("edit");
                problem(late, 409, "order-final").await;
                problem(shop.http.get(shop.url("/orders/o-00000000000000000000000000000000")).send().await.expect("get"), 404, "no-such-order").await;
                problem(shop.http.get(shop.url("/orders/not-an-id")).send().await.expect("get"), 404, "no-such-order").await;
                let missing = shop.http.post(shop.url("/orders/o-00000000000000000000000000000000/cancel")).json(&json!({"reason": "x"})).send().await.expect("cancel");
                problem(missing, 404, "no-such-order").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_requests_get_problems_and_change_nothing() {
                let (pool, _guard) = $open;
                let shop = RunningOrders::start(pool).await;
                let post = |body: String, content_type: &'static str| {
                    shop.http.post(shop.url("/orders")).header("content-type", content_type).body(body).send()
                };
                let json_post = |body: Value| post(body.to_string(), "application/json");
                problem(post("{\"customer\": ".into(), "application/json").await.expect("post"), 400, "malformed-request").await;
                problem(post(order_body("a@b.co", &[("tea-sencha", 1)]).to_string(), "text/plain").await.expect("post"), 415, "unsupported-media-type").await;
                problem(post("x".repeat(70_000), "application/json").await.expect("post"), 413, "too-large").await;
                let mut unknown_field = order_body("a@b.co", &[("tea-sencha", 1)]);
                unknown_field["coupon"] = json!("FREE");
                problem(json_post(unknown_field).await.expect("post"), 422, "malformed-request").await;
                problem(json_post(order_body("a@b.co", &[("tea-oolong", 1)])).await.expect("post"), 422, "unknown-product").await;
                problem(json_post(order_body("a@b.co", &[("tea-sencha", -2)])).await.expect("post"), 422, "invalid-order").await;
                problem(json_post(order_body("a@b.co", &[("tea-sencha", 101)])).await.expect("post"), 422, "invalid-order").await;
                problem(json_post(order_body("a@b.co", &[])).await.expect("post"), 422, "invalid-order").await;
                problem(json_post(order_body("not-an-email", &[("tea-sencha", 1)])).await.expect("post"), 422, "invalid-order").await;
                problem(json_post(json!({"customer": "a@b.co", "lines": [{"sku": "tea-sencha", "quantity": 1.5}]})).await.expect("post"), 422, "malformed-request").await;
                for query in ["?limit=0", "?limit=101", "?status=lost", "?after=garbage", "?colour=red"] {
                    problem(shop.http.get(shop.url(&format!("/orders{query}"))).send().await.expect("list"), 400, "bad-query").await;
                }
                // The GraphQL read model: errors in `errors` (GraphQL over HTTP), transport
                // mistakes as problems.
                let graphql = |body: String, content_type: &'static str| {
                    shop.http.post(shop.url("/graphql")).header("content-type", content_type).body(body).send()
                };
                for (query, says) in [
                    ("{ orders(first: 5 { nodes { id } } }", "expected"),
                    ("{ orders { nodes { price } } }", "Unknown field \"price\""),
                    ("{ orders(first: 0) { nodes { id } } }", "first is 1 to 100"),
                    ("{ orders(first: 101) { nodes { id } } }", "first is 1 to 100"),
                    ("{ orders(after: \"garbage\") { nodes { id } } }", "after is an endCursor"),
                    ("{ orders(status: LOST) { nodes { id } } }", "LOST"),
                    ("mutation { placeOrder { id } }", "mutation"),
                ] {
                    let answer: Value = graphql(json!({ "query": query }).to_string(), "application/json").await.expect("post").json().await.expect("json");
                    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
                    assert!(message.contains(says), "{query}: {answer}");
                    assert!(answer["data"].is_null() || answer["data"]["orders"].is_null(), "{query}: {answer}");
                }
                let ok: Value = graphql(json!({ "query": "{ orders { nodes { id } } }" }).to_string(), "application/json").await.expect("post").json().await.expect("json");
                assert_eq!(ok["data"]["orders"]["nodes"], json!([]), "a good query on an empty shop: {ok}");
                let unknown: Value = graphql(json!({ "query": "{ order(id: \"o-nope\") { id } }" }).to_string(), "application/json").await.expect("post").json().await.expect("json");
                assert_eq!(unknown["data"]["order"], Value::Null, "{unknown}");
                problem(graphql("{\"query\": ".into(), "application/json").await.expect("post"), 400, "malformed-request").await;
                problem(graphql(json!({ "query": "{ orders { nodes { id } } }" }).to_string(), "text/plain").await.expect("post"), 415, "unsupported-media-type").await;
                problem(graphql("x".repeat(70_000), "application/json").await.expect("post"), 413, "too-large").await;
                assert_eq!(shop.service.store.head().await.expect("head").0, 0, "no event was written");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_openapi_document_describes_every_route_and_what_it_answers() {
                let (pool, _guard) = $open;
                let shop = RunningOrders::start(pool).await;
                let doc: Value = shop.http.get(shop.url("/openapi.json")).send().await.expect("get").json().await.expect("json");
                assert!(doc["openapi"].as_str().expect("version").starts_with("3."), "{doc}");
                let mut routes: Vec<String> = Vec::new();
                for (path, item) in doc["paths"].as_object().expect("paths") {
                    for method in item.as_object().expect("item").keys() {
                        routes.push(format!("{method} {path}"));
                    }
                }
                routes.sort();
                assert_eq!(routes, ["get /orders", "get /orders/{id}", "post /orders", "post /orders/{id}/cancel", "put /orders/{id}/lines"]);
                let place = &doc["paths"]["/orders"]["post"];
                for status in ["201", "400", "409", "413", "415", "422"] {
                    assert!(place["responses"][status].is_object(), "POST /orders documents {status}: {place}");
                }
                assert!(place["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "Idempotency-Key"));
                // What the API answers has exactly the fields the document names.
                let schemas = &doc["components"]["schemas"];
                let fields = |schema: &str| {
                    let mut names: Vec<String> = schemas[schema]["properties"].as_object().unwrap_or_else(|| panic!("{schema}: {doc}")).keys().cloned().collect();
                    names.sort();
                    names
                };
                let order: Value = shop.http.post(shop.url("/orders")).json(&order_body("doc@example.com", &[("tea-sencha", 1)]))
                    .send().await.expect("post").json().await.expect("json");
                let mut answered: Vec<String> = order.as_object().expect("order").keys().cloned().collect();
                answered.sort();
                assert_eq!(answered, fields("OrderView"));
                let refused = shop.http.post(shop.url("/orders")).json(&order_body("doc@example.com", &[])).send().await.expect("post");
                let problem: Value = refused.json().await.expect("problem");
                let mut answered: Vec<String> = problem.as_object().expect("problem").keys().cloned().collect();
                answered.sort();
                assert_eq!(answered, fields("ProblemDocument"));
                let mut requested = fields("PlaceOrder");
                requested.sort();
                assert_eq!(requested, ["customer", "lines"]);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_list_pages_through_every_order_by_status() {
                let (pool, _guard) = $open;
                let shop = RunningOrders::start(pool).await;
                let mut ids = Vec::new();
                for n in 0..5 {
                    let order: Value = shop.http.post(shop.url("/orders")).json(&order_body(&format!("p{n}@example.com"), &[("infuser-steel", n + 1)]))
                        .send().await.expect("post").json().await.expect("json");
                    ids.push(order["id"].as_str().expect("id").to_owned());
                }
                shop.http.post(shop.url(&format!("/orders/{}/cancel", ids[1]))).json(&json!({"reason": "r"})).send().await.expect("cancel");
                shop.service.list().wait_for(shop.service.store.head().await.expect("head")).await.expect("projected");
                let (mut seen, mut cursor) = (Vec::new(), None::<String>);
                loop {
                    let url = match &cursor { Some(c) => shop.url(&format!("/orders?limit=2&after={c}")), None => shop.url("/orders?limit=2") };
                    let page: Value = shop.http.get(url).send().await.expect("list").json().await.expect("json");
                    seen.extend(page["orders"].as_array().expect("orders").iter().map(|o| o["id"].as_str().expect("id").to_owned()));
                    match page["next"].as_str() { Some(next) => cursor = Some(next.to_owned()), None => break }
                }
                assert_eq!(seen, ids, "every order once, oldest first");
                let canceled: Value = shop.http.get(shop.url("/orders?status=canceled")).send().await.expect("list").json().await.expect("json");
                assert_eq!(canceled["orders"].as_array().expect("orders").len(), 1);
                assert_eq!(canceled["orders"][0]["id"], ids[1].as_str());
            }
        }
    };
}

order_cases!(sqlite, {
    let dir = tempfile::tempdir().expect("tempdir");
    (crate::harness::sqlite(dir.path()).await, dir)
});

order_cases!(postgres, {
    switchboard_testkit::require_service!(Postgres);
    switchboard_testkit::pg::pool(8).await
});
