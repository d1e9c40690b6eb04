//! Subscriptions over WebSocket at `/graphql/ws`, with the `graphql-transport-ws` protocol
//! (or the legacy `graphql-ws` of subscriptions-transport-ws), picked by the client's
//! `Sec-WebSocket-Protocol`.
//!
//! The caller authenticates with the upgrade request's `Authorization` header (checked
//! before the upgrade: a bad token gets an HTTP 401) or with the `connection_init` payload
//! `{"authorization": "Bearer …"}` (a bad token closes the socket). A socket that sends no
//! `connection_init` within ten seconds is closed.
//!
//! Browsers let any page open a WebSocket to any address, and WebSockets have no CORS
//! preflight; so an upgrade that carries an `Origin` other than the server's own (its
//! `Host`, or `X-Forwarded-Host` behind a proxy) is refused. Without auth, that is what
//! keeps a web page from tailing topics on a developer's loopback server.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::schema::{Schemas, SwitchboardSchema};
use crate::auth::{Auth, AuthError, Principal};
use crate::error::ApiError;
use crate::metrics::Api;
use crate::state::AppState;

/// How long a new socket may take to send `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upgrades to a GraphQL WebSocket.
pub(super) async fn upgrade(
    State(state): State<AppState>,
    Extension(schemas): Extension<Schemas>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(origin) = foreign_origin(&headers) {
        return Err(ApiError::BadRequest(format!(
            "a GraphQL WebSocket may only be opened by pages of this server, not by {origin}"
        )));
    }
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let from_header = header.map(|h| state.auth.authenticate(Some(h))).transpose()?;
    let max_message = state.config.limits.max_request_bytes;
    Ok(upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(max_message)
        .on_upgrade(move |socket| serve(socket, state, schemas.main, protocol, from_header))
        .into_response())
}

/// Serves one socket until the client closes it (or never initialises it).
async fn serve(
    socket: WebSocket,
    state: AppState,
    schema: SwitchboardSchema,
    protocol: GraphQLProtocol,
    from_header: Option<Principal>,
) {
    let _open = state.metrics.connection(Api::Graphql);
    let (initialised, init) = oneshot::channel::<()>();
    let auth = state.auth.clone();
    let connection = GraphQLWebSocket::new(socket, schema, protocol)
        .on_connection_init(move |payload| async move {
            let _ = initialised.send(());
            let principal = authenticate(&auth, from_header, &payload).map_err(|e| {
                tracing::debug!(error = %e, "Refused a GraphQL WebSocket.");
                async_graphql::Error::new(e.to_string())
            })?;
            let mut data = Data::default();
            data.insert(principal);
            Ok(data)
        })
        .serve();
    tokio::pin!(connection);
    tokio::select! {
        () = &mut connection => return,
        waited = tokio::time::timeout(INIT_TIMEOUT, init) => if waited.is_err() {
            tracing::debug!("Closed a GraphQL WebSocket that sent no connection_init.");
            return;
        },
    }
    connection.await;
}

/// The caller of a socket: the `connection_init` payload's token if it has one, else the
/// upgrade request's, else anonymous (allowed only when auth is off).
fn authenticate(
    auth: &Arc<Auth>,
    from_header: Option<Principal>,
    payload: &serde_json::Value,
) -> Result<Principal, AuthError> {
    let presented = ["authorization", "Authorization"].iter().find_map(|k| payload.get(k)?.as_str());
    match (presented, from_header) {
        (Some(token), _) => auth.authenticate(Some(token)),
        (None, Some(principal)) => Ok(principal),
        (None, None) => auth.authenticate(None),
    }
}

/// The request's `Origin` if it names another host than the server's.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let ours = [headers.get(header::HOST), headers.get("x-forwarded-host")];
    let same =
        ours.into_iter().flatten().filter_map(|h| h.to_str().ok()).any(|h| h.eq_ignore_ascii_case(authority));
    (!same).then(|| origin.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn only_the_servers_own_pages_may_open_a_socket() {
        assert_eq!(foreign_origin(&headers(&[("host", "127.0.0.1:8080")])), None, "no Origin: not a browser");
        let own = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]);
        assert_eq!(foreign_origin(&own), None);
        let proxied = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "mq.example.com"),
            ("origin", "https://mq.example.com"),
        ]);
        assert_eq!(foreign_origin(&proxied), None);
        let evil = headers(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")]);
        assert_eq!(foreign_origin(&evil).as_deref(), Some("https://evil.example"));
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert_eq!(foreign_origin(&null).as_deref(), Some("null"));
    }
}
