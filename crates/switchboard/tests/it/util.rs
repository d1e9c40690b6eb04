use std::time::Duration;

use switchboard::{Bus, Delivery, Subscription};

/// A fresh durable embedded bus in its own directory.
pub(crate) async fn bus() -> (Bus, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::connect(&format!("embedded:{}", dir.path().display())).await.expect("connect");
    (bus, dir)
}

/// The next delivery, or a panic after 10 s.
pub(crate) async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
        .expect("delivery")
}

/// Waits until `cond` holds, up to 10 s.
pub(crate) async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn sub(name: &str) -> switchboard::SubscriptionName {
    switchboard::SubscriptionName::new(name).expect("valid name")
}

pub(crate) fn topic(name: &str) -> switchboard::TopicName {
    switchboard::TopicName::new(name).expect("valid name")
}
