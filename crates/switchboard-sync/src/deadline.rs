//! The ambient deadline: how long the request this task is serving may still take.
//!
//! A server that receives a request with a deadline (see [`IncomingContextLayer`]) runs its
//! handler inside [`with_deadline`]; every outgoing call the handler makes through
//! [`CallPolicy::call`] then gets at most the [`remaining`] time, and passes it on in its own
//! request headers. So a chain of services gives up together when the first caller does,
//! instead of each hop working on a reply nobody waits for.
//!
//! The deadline is a Tokio task-local: it follows `.await`s, not `tokio::spawn` (a spawned
//! task is detached from the request; wrap its future in [`with_deadline`] again if it is not).
//!
//! [`IncomingContextLayer`]: crate::IncomingContextLayer
//! [`CallPolicy::call`]: crate::CallPolicy::call

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `fut` with `deadline` as the ambient deadline. An earlier deadline already in effect
/// where this is called wins: a nested scope can shorten the time left, never extend it.
pub fn with_deadline<F: Future>(deadline: Instant, fut: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(effective(deadline), fut)
}

/// Runs `f` synchronously with `deadline` as the ambient deadline (earlier one wins).
pub(crate) fn sync_with_deadline<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    DEADLINE.sync_scope(effective(deadline), f)
}

fn effective(deadline: Instant) -> Instant {
    current().map_or(deadline, |d| d.min(deadline))
}

/// The ambient deadline, if the current task runs inside [`with_deadline`].
pub fn current() -> Option<Instant> {
    DEADLINE.try_get().ok()
}

/// Time left until the ambient deadline (zero once it has passed); `None` without one.
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nested_scopes_keep_the_earliest_deadline() {
        assert!(current().is_none() && remaining().is_none());
        let soon = Instant::now() + Duration::from_secs(1);
        let later = soon + Duration::from_secs(60);
        with_deadline(soon, async move {
            assert_eq!(current(), Some(soon));
            with_deadline(later, async move { assert_eq!(current(), Some(soon)) }).await;
            let sooner = soon - Duration::from_millis(500);
            with_deadline(sooner, async move { assert_eq!(current(), Some(sooner)) }).await;
            assert!(remaining().is_some_and(|r| r <= Duration::from_secs(1)));
        })
        .await;
        assert!(current().is_none());
    }
}
