//! The whole chain: an HTTP caller, the order service's API, the inventory over gRPC.

use std::sync::Arc;
use std::time::Duration;

use example_request_reply::order::{Order, OrderRequest, OrderService};
use example_request_reply::order_api::router;
use reqwest::StatusCode;

use crate::support::{Script, TRACE_ID, policy, serve_script};

async fn serve_orders(inventory_uri: &str) -> String {
    let orders = Arc::new(OrderService::new(inventory_uri, policy()).expect("uri"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router(orders)).await.expect("serve") });
    base
}

#[tokio::test]
async fn an_order_over_http_reaches_the_inventory_in_the_callers_trace_and_deadline() {
    let (uri, script) = serve_script(Script::new()).await;
    let base = serve_orders(&uri).await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/orders"))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .header("x-request-timeout-ms", "1500")
        .json(&OrderRequest { sku: "apple".into(), quantity: 3 })
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Order = response.json().await.expect("json");
    assert_eq!(order.remaining, 7);

    let seen = script.seen.lock()[0].clone();
    assert_eq!(seen.trace_id.to_string(), TRACE_ID);
    assert!(seen.traceparent.is_some_and(|tp| tp.contains(TRACE_ID)));
    let budget = Duration::from_millis(1500);
    assert!(seen.grpc_timeout.is_some_and(|t| t <= budget), "{:?}", seen.grpc_timeout);
}

#[tokio::test]
async fn refusals_map_to_client_errors() {
    let (uri, _script) = serve_script(Script::new()).await;
    let base = serve_orders(&uri).await;
    let http = reqwest::Client::new();
    let place = |sku: &str, quantity| {
        http.post(format!("{base}/orders")).json(&OrderRequest { sku: sku.into(), quantity }).send()
    };
    assert_eq!(place("durian", 1).await.expect("sent").status(), StatusCode::NOT_FOUND);
    let short = place("apple", 11).await.expect("sent");
    assert_eq!(short.status(), StatusCode::CONFLICT);
    assert!(short.text().await.expect("body").contains("only 10 unit(s)"));
}
