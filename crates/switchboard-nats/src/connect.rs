//! Opening the connection: URL checks, fail-fast connect, and the JetStream context.
//!
//! The first connect is tried once (no `retry_on_initial_connect`) with a short timeout so a
//! wrong address fails at once with [`BusError::Unreachable`]. After that, `async-nats`
//! reconnects by itself, forever, with jittered exponential backoff (a `Backoff`: 200 ms
//! doubling to [`MAX_RECONNECT_DELAY`], each pause drawn between half and all of that); calls made while it is away fail with retryable
//! errors once [`REQUEST_TIMEOUT`] passes instead of hanging.

use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};
use switchboard_core::contract::BusError;
use switchboard_policy::{Backoff, Reconnect};

use crate::errors::{BACKEND, backend_msg};

/// How long the first connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on every request and publish acknowledgement (also while disconnected).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between reconnect attempts. The pauses are jittered ([`RECONNECT_BACKOFF`]):
/// a server restart drops every client at once, and without jitter they would all reconnect
/// in the same instants.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// The pause before reconnect attempt `n` (async-nats counts the attempts): 200 ms doubling,
/// jittered down to half, so no attempt comes sooner than the 100 ms × n of the linear
/// schedule this replaced. Sooner is worse, not only busier: a client back within 50 ms of
/// a SIGKILLed `nats-server`'s restart saw messages it had acked before the kill delivered
/// again in 4 runs of 6 (`conformance nats::broker_restart_no_loss`), none at 100 ms and
/// more; the server seems to be still restoring its consumers then.
const RECONNECT_BACKOFF: Backoff =
    Backoff { initial: Duration::from_millis(200), max: MAX_RECONNECT_DELAY, ..Reconnect::DEFAULT_BACKOFF };

/// A connected client, its JetStream context and the endpoint for error messages.
pub(crate) struct Connected {
    pub(crate) client: async_nats::Client,
    pub(crate) js: async_nats::jetstream::Context,
    pub(crate) endpoint: String,
}

/// Connects to `url` (`nats://host:port` or `tls://host:port`, optionally with
/// `user:password@`) and checks that JetStream is enabled.
pub(crate) async fn connect(url: &str) -> Result<Connected, BusError> {
    let addr = parse(url)?;
    let endpoint = format!("{}:{}", addr.host(), addr.port());
    let options = ConnectOptions::new()
        .name("switchboard")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(
            |event| async move { tracing::info!(target: "switchboard_nats", %event, "nats event") },
        );
    let client = match options.connect(addr).await {
        Ok(c) => c,
        Err(e) => {
            return Err(match e.kind() {
                ConnectErrorKind::ServerParse => {
                    BusError::InvalidUrl { url: redact(url), reason: e.to_string() }
                }
                ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                    crate::errors::map(&format!("authentication at {endpoint} failed"), e, false)
                }
                _ => BusError::Unreachable { backend: BACKEND, endpoint, source: Box::new(e) },
            });
        }
    };
    let js = async_nats::jetstream::ContextBuilder::new().timeout(REQUEST_TIMEOUT).build(client.clone());
    check_jetstream(&js, &endpoint).await?;
    Ok(Connected { client, js, endpoint })
}

/// The pause before reconnect attempt `attempts`: none before attempt 0, then
/// [`RECONNECT_BACKOFF`].
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    RECONNECT_BACKOFF.delay(u32::try_from(attempts).unwrap_or(u32::MAX))
}

/// Asks the JetStream API for account info (a raw request: the typed answer of
/// `query_account` expects fields newer servers have).
async fn check_jetstream(js: &async_nats::jetstream::Context, endpoint: &str) -> Result<(), BusError> {
    let unavailable = |why: String| {
        backend_msg(
            format!("JetStream is not available at {endpoint} (start nats-server with -js): {why}"),
            false,
        )
    };
    let info: serde_json::Value =
        js.request("INFO", &serde_json::json!({})).await.map_err(|e| unavailable(e.to_string()))?;
    match info.get("error") {
        Some(err) => Err(unavailable(err.to_string())),
        None => Ok(()),
    }
}

/// Parses and checks the URL: only `nats://` and `tls://` are accepted.
fn parse(url: &str) -> Result<ServerAddr, BusError> {
    let invalid = |reason: String| BusError::InvalidUrl { url: redact(url), reason };
    if !url.contains("://") {
        return Err(invalid("expected nats://host:port".into()));
    }
    let addr: ServerAddr = url.parse().map_err(|e: std::io::Error| invalid(e.to_string()))?;
    if !matches!(addr.scheme(), "nats" | "tls") {
        return Err(invalid(format!("unsupported scheme {:?}; use nats:// or tls://", addr.scheme())));
    }
    if addr.host().is_empty() {
        return Err(invalid("the URL has no host".into()));
    }
    Ok(addr)
}

/// The URL without credentials.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_connecting() {
        for bad in
            ["", "localhost:4222", "http://localhost:4222", "nats://", "nats://a b:4222", "nats://h:99999"]
        {
            assert!(matches!(parse(bad), Err(BusError::InvalidUrl { .. })), "{bad:?}");
        }
        let a = parse("nats://127.0.0.1:4222").expect("valid");
        assert_eq!((a.host(), a.port()), ("127.0.0.1", 4222));
        assert_eq!(parse("nats://127.0.0.1").expect("valid").port(), 4222);
    }

    #[test]
    fn credentials_are_removed() {
        assert_eq!(redact("nats://u:p@h:1"), "nats://***@h:1");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
    }

    #[test]
    fn reconnect_delays_are_jittered_and_capped() {
        let ms = Duration::from_millis;
        assert_eq!(reconnect_delay(0), Duration::ZERO, "attempt 0 is not delayed");
        for _ in 0..100 {
            assert!((ms(100)..=ms(200)).contains(&reconnect_delay(1)));
            assert!((ms(200)..=ms(400)).contains(&reconnect_delay(2)));
            assert!((ms(1000)..=MAX_RECONNECT_DELAY).contains(&reconnect_delay(usize::MAX)));
        }
    }
}
