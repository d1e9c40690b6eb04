//! Bounded waits: a test that waits for something that never comes fails with what it waited
//! for, instead of hanging.

use std::time::Duration;

use switchboard_core::Message;
use switchboard_core::TopicName;
use switchboard_core::backend::Publisher;
use switchboard_core::contract::{Delivery, PublishOptions, Subscription};

/// Long enough for anything that should happen; tests normally finish far sooner.
pub const WAIT: Duration = Duration::from_secs(10);

/// The next delivery, within `within`.
///
/// # Panics
/// If nothing arrives in time, the subscription ends, or it yields an error.
pub async fn next(s: &mut Subscription, within: Duration) -> Delivery {
    next_within(s, within).await.unwrap_or_else(|| panic!("no delivery within {within:?}"))
}

/// The next delivery, or `None` if nothing arrives within `within`.
///
/// # Panics
/// If the subscription ends or yields an error.
pub async fn next_within(s: &mut Subscription, within: Duration) -> Option<Delivery> {
    match tokio::time::timeout(within, s.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        Ok(Some(Err(e))) => panic!("subscription error: {e}"),
        Ok(None) => panic!("subscription ended"),
        Err(_) => None,
    }
}

/// Asserts that nothing is delivered (nor does the subscription end) for `d`.
///
/// # Panics
/// If anything arrives.
pub async fn nothing_for(s: &mut Subscription, d: Duration) {
    if let Ok(got) = tokio::time::timeout(d, s.next()).await {
        panic!("expected no delivery for {d:?}, got {got:?}");
    }
}

/// Waits until `cond` holds, checking every 20 ms.
///
/// # Panics
/// If it does not hold within `within` (the message says `what` was awaited).
pub async fn eventually(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `messages` to `topic` with default options.
///
/// # Panics
/// If the publish fails.
pub async fn publish<P>(bus: &P, topic: &TopicName, messages: impl IntoIterator<Item = Message>)
where
    P: Publisher + ?Sized,
{
    let messages = messages.into_iter().collect();
    if let Err(e) = bus.publish(topic, messages, &PublishOptions::default()).await {
        panic!("publish to {topic}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_once_the_condition_holds() {
        let mut calls = 0;
        eventually("the third call", WAIT, async || {
            calls += 1;
            calls == 3
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never")]
    async fn eventually_fails_with_what_it_waited_for() {
        eventually("never", Duration::from_millis(50), async || false).await;
    }
}
