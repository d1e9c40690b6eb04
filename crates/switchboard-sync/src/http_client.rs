//! HTTP: [`HttpClient`], a `reqwest` client whose requests run under a [`CallPolicy`].

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanRef, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use reqwest::header::RETRY_AFTER;
use reqwest::{IntoUrl, Method, Request, RequestBuilder, Response, StatusCode};

use crate::error::{CallError, Retryable};
use crate::operation::Operation;
use crate::policy::CallPolicy;
use crate::propagation::{inject_request_timeout, inject_trace_context};

/// A `reqwest` client with a [`CallPolicy`]: every request gets the policy's timeout, retries,
/// budget and breaker, a client span, and carries `traceparent`/`tracestate` and the
/// remaining deadline ([`REQUEST_TIMEOUT_HEADER`](crate::REQUEST_TIMEOUT_HEADER)). Cheap to
/// clone (clones share the connection pool, budget and breaker).
///
/// Retries, by [`HttpError`]'s [`Retryable`] rules:
/// - a connection that could not be established: any method (nothing was sent);
/// - a timeout, another transport error, or a `429`, `502`, `503` or `504` answer: only
///   idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, `TRACE`), since a
///   `POST` or `PATCH` may have been applied;
/// - a `Retry-After` (seconds or HTTP date) replaces the backoff, capped at the policy's
///   `max_retry_after`;
/// - a request whose body is a stream cannot be sent twice and is not retried.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    policy: CallPolicy,
    /// `peer.service` on every client span: names a dependency that reports no spans of its
    /// own on the service graph.
    peer_service: Option<String>,
}

impl HttpClient {
    /// A client with the policy's connect timeout.
    ///
    /// # Errors
    /// The TLS backend could not be initialized.
    pub fn new(policy: CallPolicy) -> Result<HttpClient, reqwest::Error> {
        let client = reqwest::Client::builder().connect_timeout(policy.connect_timeout).build()?;
        Ok(HttpClient { client, policy, peer_service: None })
    }

    /// Uses a client configured by hand (proxies, TLS, pools…).
    pub fn with_client(client: reqwest::Client, policy: CallPolicy) -> HttpClient {
        HttpClient { client, policy, peer_service: None }
    }

    /// Names the service this client calls (`peer.service` on its spans), for a dependency
    /// that exports no spans itself: the service graph draws it under this name.
    pub fn with_peer_service(mut self, name: impl Into<String>) -> HttpClient {
        self.peer_service = Some(name.into());
        self
    }

    /// The policy.
    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// Starts a request, to finish with the builder's methods and pass to [`HttpClient::send`].
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Starts a `GET`.
    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a `POST`.
    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Starts a `PUT`.
    pub fn put(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// Starts a `DELETE`.
    pub fn delete(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// Sends the request under the policy. The per-attempt timeout also bounds reading the
    /// returned response's body.
    ///
    /// # Errors
    /// [`CallError`]; a `429` or `5xx` answer is an [`HttpError::Status`] (the dependency's
    /// trouble, which retries and the breaker act on). Other answers, `4xx` included, are
    /// returned as the [`Response`], as `reqwest` does: use `error_for_status` on them.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, CallError<HttpError>> {
        let request = request.build().map_err(|e| CallError::Failed {
            call: "HTTP request".into(),
            attempts: 0,
            error: HttpError::Build(e),
        })?;
        let mut op = Operation::http(request.method(), request.url());
        if let Some(peer) = &self.peer_service {
            op = op.with_attribute(KeyValue::new("peer.service", peer.clone()));
        }
        let idempotent = op.idempotent;
        let template = request.try_clone();
        let policy =
            if template.is_some() { self.policy.clone() } else { self.policy.clone().without_retries() };
        let mut first = Some(request);
        policy
            .call(op, |timeout| {
                let request = first.take().or_else(|| template.as_ref().and_then(Request::try_clone));
                let client = self.client.clone();
                async move {
                    let mut request = request.ok_or(HttpError::NotReplayable)?;
                    *request.timeout_mut() = Some(timeout);
                    inject_trace_context(request.headers_mut());
                    inject_request_timeout(request.headers_mut());
                    let response = client
                        .execute(request)
                        .await
                        .map_err(|error| HttpError::Transport { error, idempotent })?;
                    let status = response.status();
                    let cx = Context::current();
                    cx.span().set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok());
                        return Err(HttpError::Status {
                            status,
                            retry_after: retry_after.and_then(parse_retry_after),
                            idempotent,
                        });
                    }
                    if status.is_client_error() {
                        cx.span().set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
                        cx.span().set_status(Status::error(status.to_string()));
                    }
                    Ok(response)
                }
            })
            .await
    }
}

/// `Retry-After`: delay seconds or an HTTP date (a date in the past: retry at once).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Why one HTTP attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be built (e.g. an invalid URL or header).
    #[error("invalid request: {}", chain(.0))]
    Build(reqwest::Error),
    /// Sending the request or receiving the answer failed.
    #[error("{}", chain(.error))]
    Transport {
        /// The `reqwest` error.
        error: reqwest::Error,
        /// The request's method is idempotent.
        idempotent: bool,
    },
    /// The server answered `429` or `5xx`.
    #[error("server answered {status}")]
    Status {
        /// The answer's status.
        status: StatusCode,
        /// The answer's `Retry-After`.
        retry_after: Option<Duration>,
        /// The request's method is idempotent.
        idempotent: bool,
    },
    /// The request's body cannot be sent twice.
    #[error("the request body cannot be sent again")]
    NotReplayable,
}

impl HttpError {
    /// The status of a `429`/`5xx` answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A `reqwest` error with its causes: its own message ("error sending request for url …")
/// does not say why (connection refused, DNS…).
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Retryable for HttpError {
    fn is_retryable(&self) -> bool {
        match self {
            HttpError::Transport { error, .. } if error.is_connect() => true,
            HttpError::Transport { error, idempotent } => *idempotent && !error.is_builder(),
            HttpError::Status { status, idempotent, .. } => {
                *idempotent
                    && matches!(
                        *status,
                        StatusCode::TOO_MANY_REQUESTS
                            | StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    )
            }
            HttpError::Build(_) | HttpError::NotReplayable => false,
        }
    }

    fn is_dependency_failure(&self) -> bool {
        matches!(self, HttpError::Transport { .. } | HttpError::Status { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn annotate(&self, span: &SpanRef<'_>) {
        let error_type = match self {
            HttpError::Status { status, .. } => status.as_u16().to_string(),
            HttpError::Transport { error, .. } if error.is_timeout() => "timeout".into(),
            HttpError::Transport { error, .. } if error.is_connect() => "connect".into(),
            _ => "_OTHER".into(),
        };
        span.set_attribute(KeyValue::new("error.type", error_type));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        assert!(parse_retry_after(&later).is_some_and(|d| d > Duration::from_secs(100)));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn only_idempotent_requests_retry_answers() {
        let status = |status, idempotent| HttpError::Status { status, retry_after: None, idempotent };
        assert!(status(StatusCode::SERVICE_UNAVAILABLE, true).is_retryable());
        assert!(!status(StatusCode::SERVICE_UNAVAILABLE, false).is_retryable());
        assert!(!status(StatusCode::INTERNAL_SERVER_ERROR, true).is_retryable());
        assert!(status(StatusCode::INTERNAL_SERVER_ERROR, true).is_dependency_failure());
        let url = reqwest::Url::parse("http://user:secret@example.com/x").expect("url");
        assert!(
            Operation::http(&Method::PUT, &url).idempotent
                && !Operation::http(&Method::POST, &url).idempotent
        );
        assert_eq!(Operation::http(&Method::GET, &url).name(), "GET http://example.com/x");
    }
}
