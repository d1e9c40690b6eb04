//! Choosing a backend by URL, so switching a service between brokers is a configuration
//! change.

use std::sync::Arc;

use switchboard_core::backend::Backend;
use switchboard_core::contract::BusError;

/// The schemes `Bus::connect` understands, for error messages.
const SCHEMES: &str =
    "embedded:, embedded:<dir>, switchboard://, switchboards://, amqp://, amqps://, nats://";

/// Opens the backend a URL names (the table is in the crate docs).
pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Backend>, BusError> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(invalid(url, format!("no scheme; use one of {SCHEMES}")));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "embedded" => embedded(url, rest).await,
        "switchboard" | "switchboards" => remote(url).await,
        "amqp" | "amqps" => amqp(url).await,
        "nats" => nats(url).await,
        other => Err(invalid(url, format!("unknown scheme {other:?}; use one of {SCHEMES}"))),
    }
}

/// Builds `InvalidUrl` without the URL's credentials.
fn invalid(url: &str, reason: String) -> BusError {
    BusError::InvalidUrl { url: redact(url), reason }
}

/// Replaces `user:password@` and `token=` values with `***`.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let host_end = out[auth_start..].find('/').map_or(out.len(), |i| auth_start + i);
        if let Some(at) = out[auth_start..host_end].rfind('@') {
            out.replace_range(auth_start..auth_start + at, "***");
        }
    }
    if let Some(i) = out.find("token=") {
        let end = out[i..].find('&').map_or(out.len(), |j| i + j);
        out.replace_range(i + "token=".len()..end, "***");
    }
    out
}

#[cfg(feature = "embedded")]
async fn embedded(url: &str, rest: &str) -> Result<Arc<dyn Backend>, BusError> {
    use crate::embedded::EmbeddedBackend;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() || path == "memory" {
        return Ok(Arc::new(EmbeddedBackend::in_memory().await?));
    }
    if path.contains('?') || path.contains('#') {
        return Err(invalid(url, "embedded: takes a directory path and no query".into()));
    }
    Ok(Arc::new(EmbeddedBackend::open(path).await?))
}

#[cfg(not(feature = "embedded"))]
async fn embedded(_: &str, _: &str) -> Result<Arc<dyn Backend>, BusError> {
    Err(BusError::BackendNotEnabled { scheme: "embedded".into(), feature: "embedded" })
}

#[cfg(feature = "remote")]
async fn remote(url: &str) -> Result<Arc<dyn Backend>, BusError> {
    Ok(Arc::new(switchboard_remote::RemoteBackend::connect(url).await?))
}

#[cfg(not(feature = "remote"))]
async fn remote(_: &str) -> Result<Arc<dyn Backend>, BusError> {
    Err(BusError::BackendNotEnabled { scheme: "switchboard".into(), feature: "remote" })
}

#[cfg(feature = "amqp")]
async fn amqp(url: &str) -> Result<Arc<dyn Backend>, BusError> {
    Ok(Arc::new(switchboard_amqp::AmqpBackend::connect(url).await?))
}

#[cfg(not(feature = "amqp"))]
async fn amqp(_: &str) -> Result<Arc<dyn Backend>, BusError> {
    Err(BusError::BackendNotEnabled { scheme: "amqp".into(), feature: "amqp" })
}

#[cfg(feature = "nats")]
async fn nats(url: &str) -> Result<Arc<dyn Backend>, BusError> {
    Ok(Arc::new(switchboard_nats::NatsBackend::connect(url).await?))
}

#[cfg(not(feature = "nats"))]
async fn nats(_: &str) -> Result<Arc<dyn Backend>, BusError> {
    Err(BusError::BackendNotEnabled { scheme: "nats".into(), feature: "nats" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_error_messages() {
        assert_eq!(redact("amqp://guest:secret@host:5672/%2f"), "amqp://***@host:5672/%2f");
        assert_eq!(redact("switchboard://h:1?token=abc&x=1"), "switchboard://h:1?token=***&x=1");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[tokio::test]
    async fn unknown_and_missing_schemes_are_refused() {
        for url in ["kafka2://x", "no-scheme", "http://x"] {
            let err = connect(url).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("invalid connection URL"), "{url}: {err}");
        }
    }
}
