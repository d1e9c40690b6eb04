//! Exponential backoff with jitter, shared by the router's redeliveries, the retry layer, the
//! sync-call helpers and the backends' reconnect loops. It lives in `switchboard-policy`,
//! below the backends; this path re-exports it.

pub use switchboard_policy::Backoff;
