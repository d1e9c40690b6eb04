//! The order service calling the inventory over gRPC through `switchboard-sync`.

use std::time::Duration;

use example_request_reply::inventory::InventoryService;
use example_request_reply::order::{Order, OrderRequest, OrderService};
use opentelemetry::context::FutureExt as _;
use switchboard::layers::CircuitBreakerConfig;
use switchboard_sync::{CallError, with_deadline};
use tokio::time::Instant;
use tonic::Code;

use crate::support::{
    Script, TRACE_ID, policy, serve_inventory, serve_script, traced_caller, unreachable_uri,
};

fn apples(quantity: u32) -> OrderRequest {
    OrderRequest { sku: "apple".into(), quantity }
}

#[tokio::test]
async fn the_reply_arrives() {
    let uri = serve_inventory(InventoryService::new([("apple", 5)])).await;
    let orders = OrderService::new(&uri, policy()).expect("uri");
    let first = orders.place(&apples(2)).await.expect("reserved");
    assert_eq!(first.remaining, 3);
    let second = orders.place(&apples(3)).await.expect("reserved");
    assert_eq!(second, Order { reservation_id: "r-2".into(), remaining: 0 });
}

#[tokio::test]
async fn the_inventory_sees_the_callers_trace_and_a_deadline_within_the_policy() {
    let (uri, script) = serve_script(Script::new()).await;
    let timeout = Duration::from_millis(2500);
    let orders = OrderService::new(&uri, policy().with_timeout(timeout)).expect("uri");
    orders.place(&apples(1)).with_context(traced_caller()).await.expect("reserved");

    let seen = script.seen.lock()[0].clone();
    let traceparent = seen.traceparent.expect("traceparent sent");
    assert_eq!(traceparent.split('-').nth(1), Some(TRACE_ID), "{traceparent}");
    assert_eq!(seen.trace_id.to_string(), TRACE_ID, "the handler runs in the caller's trace");
    assert!(seen.grpc_timeout.is_some_and(|t| t <= timeout), "{:?}", seen.grpc_timeout);
    assert!(seen.remaining.is_some_and(|r| r <= timeout), "handler deadline {:?}", seen.remaining);

    // A caller with less time left than the policy's timeout passes on its own deadline.
    let caller_left = Duration::from_millis(1500);
    let one = apples(1);
    with_deadline(Instant::now() + caller_left, orders.place(&one)).await.expect("reserved");
    let seen = script.seen.lock()[1].clone();
    assert!(seen.grpc_timeout.is_some_and(|t| t <= caller_left), "{:?}", seen.grpc_timeout);
}

#[tokio::test]
async fn unavailable_twice_then_success_is_retried() {
    let (uri, script) = serve_script(Script::new().unavailable(2)).await;
    let orders = OrderService::new(&uri, policy()).expect("uri");
    let order = orders.place(&apples(4)).await.expect("third attempt succeeds");
    assert_eq!(order.remaining, 6);
    assert_eq!(script.hits(), 3);
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let (uri, script) = serve_script(Script::new()).await;
    let orders = OrderService::new(&uri, policy()).expect("uri");
    let err = orders.place(&OrderRequest { sku: "durian".into(), quantity: 1 }).await.expect_err("unknown");
    assert!(matches!(&err, CallError::Failed { attempts: 1, error, .. } if error.code() == Code::NotFound));
    assert_eq!(script.hits(), 1);
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_gives_a_timeout() {
    let (uri, script) = serve_script(Script::new().slow(Duration::from_secs(10))).await;
    let timeout = Duration::from_secs(1);
    let orders = OrderService::new(&uri, policy().with_timeout(timeout).without_retries()).expect("uri");
    let err = orders.place(&apples(1)).await.expect_err("too slow");
    assert!(matches!(err, CallError::Timeout { attempts: 1, timeout: t, .. } if t == timeout), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(script.hits() <= 1, "a timeout is not retried without retries");
}

#[tokio::test]
async fn repeated_failures_open_the_breaker_and_later_calls_fail_fast() {
    let (uri, script) = serve_script(Script::new().unavailable(u32::MAX)).await;
    let breaker = CircuitBreakerConfig { failure_threshold: 3, open_for: Duration::from_secs(60) };
    let orders = OrderService::new(&uri, policy().without_retries().with_breaker(breaker)).expect("uri");
    for _ in 0..3 {
        let err = orders.place(&apples(1)).await.expect_err("unavailable");
        assert!(
            matches!(&err, CallError::Failed { error, .. } if error.code() == Code::Unavailable),
            "{err}"
        );
    }
    for _ in 0..2 {
        let err = orders.place(&apples(1)).await.expect_err("open");
        assert!(matches!(err, CallError::CircuitOpen { .. }), "{err}");
    }
    assert_eq!(script.hits(), 3, "calls refused by the open breaker never reach the server");
}

#[tokio::test]
async fn an_unreachable_inventory_gives_a_clear_error() {
    let uri = unreachable_uri().await;
    let orders = OrderService::new(&uri, policy()).expect("uri");
    let err = orders.place(&apples(1)).await.expect_err("nobody there");
    assert!(
        matches!(&err, CallError::Failed { attempts: 3, error, .. } if error.code() == Code::Unavailable),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.starts_with("inventory.v1.Inventory/Reserve: "), "{text}");
    assert!(text.to_lowercase().contains("connect"), "{text}");
}
