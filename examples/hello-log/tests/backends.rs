//! The example on every backend: switching is a change of URL only.

use example_support::{Backend, unique};

async fn both_services_replay_every_order_in_order(backend: Backend) {
    let Some(target) = backend.start().await else { return };
    let topic = unique("orders");
    let report = example_hello_log::run(&target.url, &topic, 50).await.expect("run");
    target.clean_up(&[&topic], &["billing", "analytics"]).await;
    let expected: Vec<u32> = (0..50).collect();
    assert_eq!(report.billing, expected, "billing replayed the whole log in order");
    assert_eq!(report.analytics, expected, "analytics has its own cursor and replayed it too");
}

example_support::on_every_backend!(both_services_replay_every_order_in_order);
