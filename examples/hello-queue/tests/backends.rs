//! The example on every backend: switching is a change of URL only.

use example_support::{Backend, unique};

async fn competing_consumers_split_the_jobs(backend: Backend) {
    let Some(target) = backend.start().await else { return };
    let topic = unique("jobs");
    let report = example_hello_queue::run(&target.url, &topic, 3, 60).await.expect("run");
    assert_eq!(report.all_jobs(), (0..60).collect::<Vec<_>>(), "every job handled exactly once");
    assert!(report.by_worker.len() >= 2, "the work was shared: {:?}", report.by_worker.keys());
    // The router's dead-letter topic for the `workers` subscription goes too.
    target.clean_up(&[&topic, &format!("{topic}.workers.dlq")], &["workers"]).await;
}

example_support::on_every_backend!(competing_consumers_split_the_jobs);
