//! The connection URL: `switchboard://host:port` (plaintext HTTP/2) or
//! `switchboards://host:port` (TLS), with `?token=` and, for TLS, `?ca=<path>`.
//!
//! Parsed by hand rather than with a URL library because the grammar is tiny and every
//! error must say what to fix without ever echoing the token.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use switchboard_core::contract::BusError;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

/// The port `switchboard serve` listens on for gRPC unless told otherwise.
pub(crate) const DEFAULT_PORT: u16 = 50051;

/// Everything a connection needs, taken from the URL and the environment.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `http://host:port` or `https://host:port`, for tonic.
    pub(crate) uri: String,
    /// `host:port`, for error messages.
    pub(crate) endpoint: String,
    /// The host alone (the TLS server name).
    pub(crate) host: String,
    /// Whether to speak TLS.
    pub(crate) tls: bool,
    /// A private CA certificate (PEM) to trust instead of the public roots.
    pub(crate) ca: Option<PathBuf>,
    /// The `authorization` metadata value (`Bearer <token>`), if there is a token.
    pub(crate) authorization: Option<AsciiMetadataValue>,
    /// The `switchboard-service` metadata value: the service this connection publishes and
    /// consumes for, which the broker draws on its service graph.
    pub(crate) service: Option<AsciiMetadataValue>,
}

/// The metadata key naming the calling service.
pub(crate) const SERVICE_KEY: &str = "switchboard-service";

/// `name` as the value of [`SERVICE_KEY`], if it is a service name.
pub(crate) fn service_value(name: &str) -> Option<AsciiMetadataValue> {
    switchboard_core::is_service_name(name.as_bytes()).then(|| MetadataValue::try_from(name).ok()).flatten()
}

/// The URL with every query value but `ca` (a token, or a token under a misspelt name) and
/// any user info before the host replaced, safe to print.
pub(crate) fn redact(url: &str) -> String {
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let head = match (head.find("://"), head.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &head[..s + 3], &head[at..]),
        _ => head.to_owned(),
    };
    if query.is_empty() {
        return head;
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k != "ca" => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

fn invalid(url: &str, reason: impl Into<String>) -> BusError {
    BusError::InvalidUrl { url: redact(url), reason: reason.into() }
}

/// Parses `url`; `env_token` is the value of `SWITCHBOARD_TOKEN`, used when the URL has no
/// `token` (passed in so tests need not touch the process environment).
///
/// # Errors
/// [`BusError::InvalidUrl`] naming what is wrong.
pub(crate) fn parse(url: &str, env_token: Option<String>) -> Result<Target, BusError> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("switchboard://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("switchboards://") {
        (true, rest)
    } else {
        return Err(invalid(url, "the scheme must be switchboard:// (plaintext) or switchboards:// (TLS)"));
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('/') {
        return Err(invalid(url, "the URL takes no path: use switchboard://host:port"));
    }
    if authority.contains('@') {
        return Err(invalid(url, "credentials go in ?token=… or SWITCHBOARD_TOKEN, not before the host"));
    }
    let (host, port) = split_host_port(authority).map_err(|reason| invalid(url, reason))?;

    let mut token = None;
    let mut ca = None;
    let mut service = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| invalid(url, format!("the value of `{key}` is not UTF-8 once percent-decoded")))?
            .into_owned();
        match key {
            "token" if !value.is_empty() => token = Some(value),
            "token" => return Err(invalid(url, "`token` is empty")),
            "ca" if !tls => {
                return Err(invalid(url, "`ca` needs TLS: use switchboards://"));
            }
            "ca" if !value.is_empty() => ca = Some(PathBuf::from(value)),
            "ca" => return Err(invalid(url, "`ca` is empty: give the path of a PEM file")),
            "service" => service = Some(value),
            other => {
                return Err(invalid(url, format!("unknown parameter `{other}`; known: token, ca, service")));
            }
        }
    }
    let token = token.or(env_token.filter(|t| !t.is_empty()));
    let authorization = token
        .map(|t| {
            MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                invalid(url, "the token holds characters not allowed in a header (use visible ASCII)")
            })
        })
        .transpose()?;
    let service = service
        .map(|s| {
            service_value(&s).ok_or_else(|| {
                invalid(url, "`service` must be 1 to 128 printable ASCII characters without spaces")
            })
        })
        .transpose()?;
    let endpoint = format!("{host}:{port}");
    let uri = format!("{}://{endpoint}", if tls { "https" } else { "http" });
    if tonic::transport::Endpoint::from_shared(uri.clone()).is_err() {
        return Err(invalid(url, format!("`{endpoint}` is not a valid host and port")));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok(Target { uri, endpoint, host, tls, ca, authorization, service })
}

/// `host:port`, `host` (default port) or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
    if authority.is_empty() {
        return Err("the host is missing: use switchboard://host:port".into());
    }
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                (host, rest.strip_prefix(':'))
            }
            None => return Err("an IPv6 address must be closed with `]`".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("the host is missing: use switchboard://host:port".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("port `{p}` is not a number from 1 to 65535")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(url: &str) -> String {
        match parse(url, None) {
            Err(BusError::InvalidUrl { reason, url: shown }) => {
                assert!(!shown.contains("s3cret"), "the token leaked into {shown}");
                reason
            }
            other => panic!("expected InvalidUrl for {url}, got {other:?}"),
        }
    }

    #[test]
    fn plaintext_and_tls() {
        let t = parse("switchboard://localhost:7000", None).unwrap();
        assert_eq!(
            (t.uri.as_str(), t.tls, t.authorization.is_none()),
            ("http://localhost:7000", false, true)
        );
        let t = parse("switchboards://broker.example/?ca=%2Ftmp%2Fca.pem&token=s3cret", None).unwrap();
        assert_eq!(t.uri, "https://broker.example:50051");
        assert_eq!(t.host, "broker.example");
        assert_eq!(t.ca, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(t.authorization.unwrap(), "Bearer s3cret");
        let t = parse("switchboard://[::1]:9", None).unwrap();
        assert_eq!((t.uri.as_str(), t.host.as_str()), ("http://[::1]:9", "::1"));
    }

    #[test]
    fn the_url_token_wins_over_the_environment() {
        let t = parse("switchboard://h:1", Some("from-env".into())).unwrap();
        assert_eq!(t.authorization.unwrap(), "Bearer from-env");
        let t = parse("switchboard://h:1?token=from-url", Some("from-env".into())).unwrap();
        assert_eq!(t.authorization.unwrap(), "Bearer from-url");
    }

    #[test]
    fn bad_urls_say_why_without_the_token() {
        assert!(reason("http://h:1").contains("scheme"));
        assert!(reason("switchboard://").contains("host is missing"));
        assert!(reason("switchboard://h:99999?token=s3cret").contains("port"));
        assert!(reason("switchboard://h:1/topics?token=s3cret").contains("no path"));
        assert!(reason("switchboard://h:1?tokn=s3cret").contains("unknown parameter `tokn`"));
        assert!(reason("switchboard://h:1?ca=/x&token=s3cret").contains("needs TLS"));
        assert!(reason("switchboard://user:s3cret@h:1").contains("credentials"));
        assert!(reason("switchboard://h:1?token=s3cret%0A").contains("header"));
        assert!(reason("switchboard://h h:1?token=s3cret").contains("host and port"));
        assert_eq!(redact("switchboard://h:1?ca=x&token=s3cret"), "switchboard://h:1?ca=x&token=***");
    }
}
