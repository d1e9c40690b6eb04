//! REST API under `/v1`, with the CloudEvents HTTP binding, and its OpenAPI document at
//! `/openapi.json`.
//!
//! | Route | Methods | Permission |
//! |---|---|---|
//! | `/v1/topics` | GET (filtered), POST | admin |
//! | `/v1/topics/{topic}` | GET, DELETE | admin |
//! | `/v1/topics/{topic}/events` | POST (binary, structured, batch) | publish |
//! | `/v1/topics/{topic}/partitions/{partition}/messages` | GET | consume |
//! | `/v1/topics/{topic}/subscriptions` | GET, POST | admin |
//! | `…/subscriptions/{sub}` | GET, DELETE | admin |
//! | `…/{sub}/stats` | GET | admin |
//! | `…/{sub}/receive` | POST (long poll) | consume |
//! | `…/{sub}/ack`, `…/nack`, `…/extend` | POST | consume |
//! | `…/{sub}/messages` (stream), `…/commit`, `…/seek` | GET, POST, POST | consume |
//! | `…/{sub}/deadletters`, `…/redrive` | GET, POST | admin |
//! | `/v1/traces` | POST (OTLP/HTTP, protobuf or JSON) | telemetry |
//! | `/v1/graph`, `/v1/graph/history` | GET | admin on `*` |
//!
//! Every handler authenticates first (the [`Caller`](crate::http::Caller) extractor), checks
//! the permission on the topic next, and only then parses the body and touches the broker.
//! Every error, including unknown routes, wrong methods and rejected bodies, is
//! `application/problem+json`.

mod admin;
mod cloudevents;
mod deadletters;
mod extract;
mod openapi;
mod publish;
mod receive;
mod stream;
mod time;

// For the fuzz targets (`crate::fuzzing`).
pub(crate) use cloudevents::encode as encode_event;
pub(crate) use extract::ApiQuery;
pub(crate) use publish::decode_request as decode_publish;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, any, get, post};

use switchboard_proto::reason::Reason;

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of the routes of one subscription.
macro_rules! sub {
    ($rest:literal) => {
        concat!("/v1/topics/{topic}/subscriptions/{sub}", $rest)
    };
}

/// Every route with its handlers; the OpenAPI document lists exactly these paths.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/openapi.json", get(openapi::serve)),
        ("/v1/topics", get(admin::list_topics).post(admin::create_topic)),
        ("/v1/topics/{topic}", get(admin::get_topic).delete(admin::delete_topic)),
        ("/v1/topics/{topic}/events", post(publish::publish)),
        ("/v1/topics/{topic}/partitions/{partition}/messages", get(stream::read_partition)),
        ("/v1/topics/{topic}/subscriptions", get(admin::list_subscriptions).post(admin::create_subscription)),
        (sub!(""), get(admin::get_subscription).delete(admin::delete_subscription)),
        (sub!("/stats"), get(admin::stats)),
        // POST only: a receive leases messages, which GET and HEAD must never do.
        (sub!("/receive"), post(receive::receive)),
        (sub!("/ack"), post(receive::ack)),
        (sub!("/nack"), post(receive::nack)),
        (sub!("/extend"), post(receive::extend)),
        (sub!("/messages"), get(stream::read_subscription)),
        (sub!("/commit"), post(stream::commit)),
        (sub!("/seek"), post(stream::seek)),
        (sub!("/deadletters"), get(deadletters::list)),
        (sub!("/redrive"), post(deadletters::redrive)),
        ("/v1/traces", post(crate::telemetry::otlp::export)),
        ("/v1/graph", get(crate::telemetry::routes::graph)),
        ("/v1/graph/history", get(crate::telemetry::routes::history)),
    ]
}

/// The REST routes.
pub(crate) fn router() -> Router<AppState> {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| router.route(path, methods))
        // Anything else under /v1 is a problem document too, pointing at the API's map.
        .route("/v1/{*rest}", any(no_route))
        .route("/v1", any(no_route))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn no_route(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; the routes are listed at /openapi.json",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> Response {
    let detail = format!("{} is not allowed on {}; see /openapi.json", req.method(), req.uri().path());
    extract::problem(StatusCode::METHOD_NOT_ALLOWED, Reason::MethodNotAllowed, detail)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc = openapi::document();
        let documented: BTreeSet<&str> =
            doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
        let routed: BTreeSet<&str> = routes().iter().map(|(p, _)| *p).collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn every_reference_in_the_openapi_document_resolves() {
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(serde_json::Value::String(r)) = o.get("$ref") {
                        out.push(r);
                    }
                    o.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = openapi::document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50);
        for r in found {
            let pointer = r.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
    }
}
