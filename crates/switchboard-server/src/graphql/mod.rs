//! GraphQL at `/graphql`: topics, partitions, subscriptions with their counts and rates,
//! messages; mutations to publish and administer; a live tail of a topic.
//!
//! | Route | What |
//! |---|---|
//! | `POST /graphql` | Queries and mutations (`application/json` body `{query, operationName, variables}`). |
//! | `GET /graphql` | GraphiQL, for people. |
//! | `GET /graphql/ws` | Subscriptions over WebSocket (`graphql-transport-ws`, or the legacy `graphql-ws`). |
//! | `GET /graphql/schema.graphql` | The schema in SDL. |
//!
//! **Auth.** HTTP requests authenticate with `Authorization: Bearer …` (a missing or
//! invalid token is an HTTP 401 problem, before any GraphQL runs). A WebSocket sends it in
//! the upgrade request's header or, as browsers must, in the `connection_init` payload
//! `{"authorization": "Bearer …"}`; a bad token closes the socket. Resolvers check the
//! token's permission on each topic they touch: lists show only what the caller may see,
//! anything else fails with `FORBIDDEN` before changing anything.
//!
//! **Errors** follow GraphQL's convention: HTTP 200 with `errors`, each with
//! `extensions.code` (`BAD_USER_INPUT`, `NOT_FOUND`, `FORBIDDEN`, `CONFLICT`,
//! `GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED`, …) and `extensions.status`, the
//! HTTP status the REST API would answer with. Queries deeper than
//! `limits.max_graphql_depth` or more complex than `limits.max_graphql_complexity` fail
//! validation.

mod access;
mod error;
mod inputs;
mod mutation;
mod query;
mod schema;
mod service_graph;
mod subscription;
mod types;
mod ws;

use async_graphql::http::GraphiQLSource;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use self::schema::Schemas;
use crate::error::ApiError;
use crate::http::Caller;
use crate::state::AppState;

/// Where queries and mutations are posted, and GraphiQL is served.
const ENDPOINT: &str = "/graphql";
/// Where subscriptions are served over WebSocket.
const WS_ENDPOINT: &str = "/graphql/ws";

/// The GraphQL routes.
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let schemas = Schemas::new(state);
    Router::new()
        .route(ENDPOINT, get(graphiql).post(execute))
        .route(WS_ENDPOINT, get(ws::upgrade))
        .route("/graphql/schema.graphql", get(sdl))
        .layer(Extension(schemas))
}

/// Runs one query or mutation. The body is read through axum's `Bytes`, so the server's
/// request size limit applies.
async fn execute(
    Extension(schemas): Extension<Schemas>,
    Caller(principal): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send GraphQL requests as application/json, not {:?}",
            if content_type.is_empty() { "no content type" } else { content_type }
        )));
    }
    let mut request: async_graphql::Request = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not a GraphQL request ({{\"query\": …, \"variables\": …}}; batches are not supported): {e}"
        ))
    })?;
    let schema = schemas.for_request(&mut request).clone();
    let response = schema.execute(request.data(principal)).await;
    // Plain JSON, for which GraphQL over HTTP answers 200 even when the request had errors.
    match serde_json::to_vec(&response) {
        Ok(body) => Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "Cannot serialize a GraphQL response.");
            Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// GraphiQL, pointed at this server's endpoints.
async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint(ENDPOINT)
            .subscription_endpoint(WS_ENDPOINT)
            .title("Switchboard GraphQL")
            .finish(),
    )
}

/// The schema in SDL, for code generators and people (authenticated, like introspection).
async fn sdl(Extension(schemas): Extension<Schemas>, _: Caller) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], schemas.main.sdl())
}
