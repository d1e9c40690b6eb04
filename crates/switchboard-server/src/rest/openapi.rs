//! The OpenAPI 3.1 document of the REST API, served at `/openapi.json`.
//!
//! Written by hand; a unit test in `mod.rs` checks that its paths are exactly the router's,
//! and the integration tests call every operation it lists.

use axum::Json;
use serde_json::{Value, json};

/// `GET /openapi.json`.
pub(super) async fn serve() -> Json<Value> {
    Json(document())
}

/// A reference to a component.
fn r(kind: &str, name: &str) -> Value {
    json!({ "$ref": format!("#/components/{kind}/{name}") })
}

fn schema(name: &str) -> Value {
    r("schemas", name)
}

/// A JSON body of `schema`.
fn body(schema_name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema(schema_name) } } })
}

/// A 2xx response with a JSON body of `schema`.
fn ok(description: &str, schema_name: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema(schema_name) } } })
}

fn no_content(description: &str) -> Value {
    json!({ "description": description })
}

/// Problem responses by status.
fn problems(statuses: &[u16]) -> Vec<(String, Value)> {
    let mut all = vec![401, 403];
    all.extend_from_slice(statuses);
    all.sort_unstable();
    all.dedup();
    all.into_iter().map(|s| (s.to_string(), r("responses", &format!("Problem{s}")))).collect()
}

/// One operation.
fn op(
    id: &str,
    tag: &str,
    summary: &str,
    params: &[&str],
    request: Option<Value>,
    success: (&str, Value),
    errors: &[u16],
) -> Value {
    let mut o = json!({
        "operationId": id,
        "tags": [tag],
        "summary": summary,
        "parameters": params.iter().map(|p| r("parameters", p)).collect::<Vec<_>>(),
        "responses": responses(success, errors),
    });
    if let Some(req) = request {
        o["requestBody"] = req;
    }
    o
}

/// The whole document.
pub(super) fn document() -> Value {
    // Path parameters of one subscription.
    let ts = ["topic", "sub"];
    let receive = op(
        "receive",
        "consume",
        "Lease up to `max` messages of a queue subscription, waiting up to `wait_ms` for the first (long polling)",
        &["topic", "sub", "max", "wait_ms"],
        None,
        ("200", ok("The leased messages (none if the wait ran out)", "ReceiveResponse")),
        &[400, 404, 409],
    );
    let mut receive_post = receive;
    receive_post["requestBody"] = json!({
        "required": false,
        "content": { "application/json": { "schema": schema("ReceiveRequest") } },
    });
    let paths = object(vec![
        (
            "/openapi.json",
            json!({
                "get": {
                    "operationId": "openapi",
                    "tags": ["meta"],
                    "summary": "This document",
                    "security": [],
                    "responses": { "200": { "description": "The OpenAPI document", "content": { "application/json": {} } } },
                },
            }),
        ),
        (
            "/v1/topics",
            json!({
                "get": op("listTopics", "admin", "Topics the caller may administer", &[], None,
                    ("200", ok("The topics", "TopicList")), &[]),
                "post": op("createTopic", "admin", "Create a topic (the server's topic defaults fill what `config` leaves out)",
                    &[], Some(body("CreateTopic")),
                    ("201", ok("Created (200: it already existed with these settings)", "Topic")), &[400, 409]),
            }),
        ),
        (
            "/v1/topics/{topic}",
            json!({
                "get": op("getTopic", "admin", "A topic: settings, partitions and subscriptions", &["topic"], None,
                    ("200", ok("The topic", "Topic")), &[400, 404]),
                "delete": op("deleteTopic", "admin", "Delete a topic, its subscriptions and its data", &["topic"], None,
                    ("204", no_content("Deleted")), &[400, 404]),
            }),
        ),
        (
            "/v1/topics/{topic}/events",
            json!({
                "post": {
                    "operationId": "publish",
                    "tags": ["publish"],
                    "summary": "Publish CloudEvents",
                    "description": "Binary mode: attributes in `ce-*` headers (`ce-specversion`, `ce-id`, `ce-source` and \
                        `ce-type` required; `ce-subject`, `ce-time`, `ce-dataschema`; any other `ce-<name>` is an \
                        extension), values percent-encoded as the HTTP binding says, `Content-Type` is \
                        `datacontenttype`, the body is the data. Structured mode: `application/cloudevents+json`. \
                        Batched mode: `application/cloudevents-batch+json`. A repeated `id` within the topic's \
                        dedup window is stored once (`duplicate: true`).",
                    "parameters": [
                        r("parameters", "topic"),
                        r("parameters", "deliver_at"),
                        r("parameters", "deliver_at_header"),
                        { "name": "ce-specversion", "in": "header", "schema": { "type": "string", "const": "1.0" },
                          "description": "Binary mode" },
                        { "name": "ce-id", "in": "header", "schema": { "type": "string" }, "description": "Binary mode" },
                        { "name": "ce-source", "in": "header", "schema": { "type": "string" }, "description": "Binary mode" },
                        { "name": "ce-type", "in": "header", "schema": { "type": "string" }, "description": "Binary mode" },
                        { "name": "ce-subject", "in": "header", "schema": { "type": "string" } },
                        { "name": "ce-time", "in": "header", "schema": { "type": "string", "format": "date-time" } },
                        { "name": "ce-dataschema", "in": "header", "schema": { "type": "string", "format": "uri" } },
                    ],
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/cloudevents+json": { "schema": schema("CloudEvent") },
                            "application/cloudevents-batch+json": {
                                "schema": { "type": "array", "items": schema("CloudEvent") },
                            },
                            "*/*": {
                                "schema": { "type": "string", "format": "binary", "description": "Binary mode: the data" },
                            },
                        },
                    },
                    "responses": responses(("200", ok("Stored durably under the topic's fsync policy", "PublishResponse")),
                        &[400, 404, 413, 415]),
                },
            }),
        ),
        (
            "/v1/topics/{topic}/partitions/{partition}/messages",
            json!({
                "get": op("readPartition", "stream", "Read one partition from an offset, outside any subscription",
                    &["topic", "partition", "offset", "max_read", "wait_ms"], None,
                    ("200", ok("The messages and the offset to read next", "PartitionRead")), &[400, 404]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions",
            json!({
                "get": op("listSubscriptions", "admin", "Subscriptions of a topic", &["topic"], None,
                    ("200", ok("The subscriptions", "SubscriptionList")), &[400, 404]),
                "post": op("createSubscription", "admin",
                    "Create a subscription (a queue subscription with `max_deliveries` also gets a dead-letter topic)",
                    &["topic"], Some(body("CreateSubscription")),
                    ("201", ok("Created (200: it already existed with these settings)", "Subscription")), &[400, 404, 409]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}",
            json!({
                "get": op("getSubscription", "admin", "A subscription's settings", &ts, None,
                    ("200", ok("The subscription", "Subscription")), &[400, 404]),
                "delete": op("deleteSubscription", "admin", "Delete a subscription and its state (not its dead-letter topic)",
                    &ts, None, ("204", no_content("Deleted")), &[400, 404]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/stats",
            json!({
                "get": op("subscriptionStats", "admin", "Backlog, in-flight, lag and dead-letter counts", &ts, None,
                    ("200", ok("The counts", "SubscriptionStats")), &[400, 404]),
            }),
        ),
        ("/v1/topics/{topic}/subscriptions/{sub}/receive", json!({ "post": receive_post })),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/ack",
            json!({
                "post": op("ack", "consume",
                    "Ack by receipt: `receipt` answers 204 or a problem; `receipts` answers a result per receipt",
                    &ts, Some(body("AckRequest")), ("200", ok("Results per receipt (204 for a single `receipt`)", "AckResponse")),
                    &[400, 404, 410, 413]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/nack",
            json!({
                "post": op("nack", "consume", "Give a delivery back, to be delivered again after `delay_ms`", &ts,
                    Some(body("NackRequest")), ("204", no_content("Given back")), &[400, 404, 410]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/extend",
            json!({
                "post": op("extend", "consume", "Extend a lease to `by_ms` from now", &ts, Some(body("ExtendRequest")),
                    ("200", ok("The new expiry", "ExtendResponse")), &[400, 404, 410]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/messages",
            json!({
                "get": op("readSubscription", "stream",
                    "Read a stream subscription from its committed offsets (without joining its group)",
                    &["topic", "sub", "max_read", "wait_ms"], None,
                    ("200", ok("The messages; commit `offset + 1` once processed", "SubscriptionRead")), &[400, 404, 409]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/commit",
            json!({
                "post": op("commit", "stream", "Commit the next offset to read in a partition", &ts,
                    Some(body("CommitRequest")), ("204", no_content("Committed")), &[400, 404, 409]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/seek",
            json!({
                "post": op("seek", "stream", "Move a stream subscription to the earliest, latest, a time or an offset", &ts,
                    Some(body("SeekRequest")), ("204", no_content("Moved")), &[400, 404, 409]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/deadletters",
            json!({
                "get": op("listDeadLetters", "deadletters", "Dead letters of a queue subscription not yet redriven",
                    &["topic", "sub", "max_read"], None, ("200", ok("The dead letters", "DeadLetterList")), &[400, 404]),
            }),
        ),
        (
            "/v1/topics/{topic}/subscriptions/{sub}/redrive",
            json!({
                "post": op("redrive", "deadletters",
                    "Publish up to `max` dead letters again, for this subscription only", &ts,
                    Some(json!({ "required": false, "content": { "application/json": { "schema": schema("RedriveRequest") } } })),
                    ("200", ok("How many moved", "RedriveResponse")), &[400, 404]),
            }),
        ),
        (
            "/v1/traces",
            json!({
                "post": op("exportTraces", "telemetry",
                    "OTLP/HTTP trace export (protobuf or JSON) into the service graph; a refused body answers a google.rpc.Status", &[],
                    Some(json!({ "required": true, "content": {
                        "application/x-protobuf": { "schema": { "type": "string", "format": "binary" } },
                        "application/json": { "schema": schema("OtlpExportRequest") } } })),
                    ("200", json!({ "description": "Accepted; a partial success counts the spans the graph's limits refused",
                        "content": {
                            "application/x-protobuf": { "schema": { "type": "string", "format": "binary" } },
                            "application/json": { "schema": schema("OtlpExportResponse") } } })),
                    &[400, 413, 415]),
            }),
        ),
        (
            "/v1/graph",
            json!({
                "get": op("serviceGraph", "telemetry", "The service graph over a window: nodes, edges, congestion (admin on every topic)",
                    &["window"], None, ("200", ok("The graph", "ServiceGraph")), &[400]),
            }),
        ),
        (
            "/v1/graph/history",
            json!({
                "get": op("serviceGraphHistory", "telemetry", "One edge's or node's figures over the slots of a window",
                    &["graph_id", "window"], None, ("200", ok("Its figures over time", "GraphHistory")), &[400, 404]),
            }),
        ),
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Publish CloudEvents (binary, structured and batched modes of the HTTP binding), \
                receive from queue subscriptions by long polling and settle by receipt, read streams, \
                administer topics and subscriptions, list and redrive dead letters. Errors are \
                `application/problem+json` (RFC 9457).",
        },
        "security": [{ "bearer": [] }],
        "tags": [
            { "name": "publish" }, { "name": "consume" }, { "name": "stream" },
            { "name": "admin" }, { "name": "deadletters" }, { "name": "telemetry" }, { "name": "meta" },
        ],
        "paths": paths,
        "components": components(),
    })
}

fn responses(success: (&str, Value), errors: &[u16]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(success.0.to_owned(), success.1);
    for (s, v) in problems(errors) {
        m.insert(s, v);
    }
    Value::Object(m)
}

fn components() -> Value {
    let problem = |description: &str| {
        json!({ "description": description,
                "content": { "application/problem+json": { "schema": schema("Problem") } } })
    };
    let string = json!({ "type": "string" });
    let uint = json!({ "type": "integer", "minimum": 0 });
    json!({
        "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer",
                        "description": "A configured token; with no tokens configured every request is allowed" },
        },
        "parameters": {
            "topic": { "name": "topic", "in": "path", "required": true,
                       "schema": { "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$" } },
            "sub": { "name": "sub", "in": "path", "required": true,
                     "schema": { "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$" } },
            "partition": { "name": "partition", "in": "path", "required": true, "schema": uint },
            "offset": { "name": "offset", "in": "query", "schema": uint,
                        "description": "First offset to read (default: the oldest retained)" },
            "max": { "name": "max", "in": "query",
                     "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 10 } },
            "max_read": { "name": "max", "in": "query",
                          "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
            "wait_ms": { "name": "wait_ms", "in": "query", "schema": { "type": "integer", "minimum": 0, "default": 0 },
                         "description": "Wait up to this long for a first message; capped by the server (20 s by default)" },
            "deliver_at": { "name": "deliver_at", "in": "query", "schema": string,
                            "description": "Hold back from queue subscriptions until this time (RFC 3339 or ms since the epoch)" },
            "window": { "name": "window", "in": "query", "schema": { "type": "string", "enum": ["1m", "5m", "1h"], "default": "1m" } },
            "graph_id": { "name": "id", "in": "query", "required": true, "schema": string,
                          "description": "An edge's or node's id as the graph names it (`sync service:a -> service:b`, `subscription:orders/email`)" },
            "deliver_at_header": { "name": super::publish::DELIVER_AT_HEADER, "in": "header", "schema": string,
                                   "description": "As the `deliver_at` query parameter" },
        },
        "responses": {
            "Problem400": problem("Malformed request: JSON, CloudEvent, name or parameter"),
            "Problem401": problem("Missing or invalid bearer token"),
            "Problem403": problem("The token may not do this on this topic"),
            "Problem404": problem("No such topic, subscription, partition or receipt"),
            "Problem409": problem("Exists with other settings, or the subscription is of the other mode"),
            "Problem410": problem("The receipt's lease has expired; the message will be delivered again"),
            "Problem413": problem("A message, batch or body larger than the limits"),
            "Problem415": problem("Not a CloudEvent in a supported mode, or an OTLP body neither protobuf nor JSON"),
        },
        "schemas": schemas(),
    })
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let uint = json!({ "type": "integer", "minimum": 0 });
    let time = json!({ "type": "string", "format": "date-time" });
    object(vec![
        (
            "Problem",
            json!({
                "type": "object",
                "description": "RFC 9457 problem details",
                "required": ["type", "title", "status", "detail"],
                "properties": { "type": string, "title": string, "status": { "type": "integer" }, "detail": string },
            }),
        ),
        (
            "CloudEvent",
            json!({
                "type": "object",
                "description": "A CloudEvent in the JSON format; other members are extensions (string, number or boolean)",
                "required": ["specversion", "id", "source", "type"],
                "properties": {
                    "specversion": { "type": "string", "const": "1.0" },
                    "id": string, "source": string, "type": string, "subject": string, "time": time,
                    "datacontenttype": string, "dataschema": string,
                    "data": { "description": "Any JSON value (a string under a non-JSON content type is the data itself)" },
                    "data_base64": { "type": "string", "contentEncoding": "base64" },
                },
                "additionalProperties": { "type": ["string", "number", "boolean"] },
            }),
        ),
        (
            "PublishReceipt",
            json!({
                "type": "object",
                "properties": {
                    "partition": uint, "offset": uint, "timestamp": time, "duplicate": { "type": "boolean" },
                    "durability": { "type": "string", "enum": ["fsynced", "written"] },
                },
            }),
        ),
        (
            "PublishResponse",
            json!({
                "type": "object",
                "properties": { "receipts": { "type": "array", "items": schema("PublishReceipt") } },
            }),
        ),
        (
            "ReceiveRequest",
            json!({
                "type": "object",
                "properties": { "max": { "type": "integer", "minimum": 1, "maximum": 1000 }, "wait_ms": uint },
            }),
        ),
        (
            "Delivery",
            json!({
                "type": "object",
                "properties": {
                    "receipt": string, "partition": uint, "offset": uint, "attempt": { "type": "integer", "minimum": 1 },
                    "published_at": time, "lease_expires_at": time, "event": schema("CloudEvent"),
                },
            }),
        ),
        (
            "ReceiveResponse",
            json!({
                "type": "object",
                "properties": { "messages": { "type": "array", "items": schema("Delivery") } },
            }),
        ),
        (
            "AckRequest",
            json!({
                "oneOf": [
                    { "type": "object", "required": ["receipt"], "properties": { "receipt": string } },
                    { "type": "object", "required": ["receipts"],
                      "properties": { "receipts": { "type": "array", "items": string } } },
                ],
            }),
        ),
        (
            "AckResponse",
            json!({
                "type": "object",
                "properties": {
                    "acked": uint,
                    "results": { "type": "array", "items": { "type": "object", "properties": {
                        "receipt": string, "status": { "type": "integer" }, "detail": string } } },
                },
            }),
        ),
        (
            "NackRequest",
            json!({
                "type": "object", "required": ["receipt"],
                "properties": { "receipt": string, "delay_ms": uint, "error": string },
            }),
        ),
        (
            "ExtendRequest",
            json!({
                "type": "object", "required": ["receipt", "by_ms"],
                "properties": { "receipt": string, "by_ms": { "type": "integer", "minimum": 1 } },
            }),
        ),
        (
            "ExtendResponse",
            json!({
                "type": "object", "properties": { "receipt": string, "lease_expires_at": time },
            }),
        ),
        (
            "LogRecord",
            json!({
                "type": "object",
                "properties": { "partition": uint, "offset": uint, "published_at": time, "event": schema("CloudEvent") },
            }),
        ),
        (
            "PartitionRead",
            json!({
                "type": "object",
                "properties": { "messages": { "type": "array", "items": schema("LogRecord") }, "next_offset": uint },
            }),
        ),
        (
            "SubscriptionRead",
            json!({
                "type": "object",
                "properties": { "messages": { "type": "array", "items": schema("LogRecord") } },
            }),
        ),
        (
            "CommitRequest",
            json!({
                "type": "object", "required": ["partition", "offset"],
                "properties": { "partition": uint, "offset": uint },
            }),
        ),
        (
            "SeekRequest",
            json!({
                "type": "object", "required": ["to"],
                "properties": { "to": { "oneOf": [
                    { "type": "string", "enum": ["earliest", "latest"] },
                    { "type": "object", "required": ["partition", "offset"], "properties": { "partition": uint, "offset": uint } },
                    { "type": "object", "required": ["time"], "properties": { "time": { "type": ["string", "integer"] } } },
                ] } },
            }),
        ),
        (
            "FsyncPolicy",
            json!({
                "oneOf": [
                    { "type": "string", "enum": ["always", "never"] },
                    { "type": "object", "required": ["interval"], "properties": { "interval": {
                        "type": "object", "required": ["ms"], "properties": { "ms": { "type": "integer", "minimum": 1 } } } } },
                ],
            }),
        ),
        (
            "RetentionConfig",
            json!({
                "type": "object",
                "properties": {
                    "max_age_ms": { "type": ["integer", "null"] }, "max_bytes": { "type": ["integer", "null"] },
                    "until_acked": { "type": "boolean" },
                },
            }),
        ),
        (
            "TopicConfig",
            json!({
                "type": "object",
                "properties": {
                    "partitions": { "type": "integer", "minimum": 1, "maximum": 1024 },
                    "fsync": schema("FsyncPolicy"), "retention": schema("RetentionConfig"),
                    "max_message_bytes": uint, "dedup_window_ms": uint, "dedup_max_entries": uint,
                    "segment_bytes": uint, "segment_ms": uint,
                },
                "additionalProperties": false,
            }),
        ),
        (
            "SubscriptionConfig",
            json!({
                "type": "object",
                "properties": {
                    "mode": { "type": "string", "enum": ["queue", "stream"] },
                    "start": { "type": "string", "enum": ["earliest", "latest"] },
                    "lease_ms": { "type": "integer", "minimum": 1 },
                    "max_deliveries": { "type": ["integer", "null"], "minimum": 1 },
                    "dead_letter_topic": { "type": ["string", "null"] },
                    "ordered_by_key": { "type": "boolean" },
                    "max_in_flight_per_consumer": { "type": "integer", "minimum": 1 },
                },
                "additionalProperties": false,
            }),
        ),
        (
            "CreateTopic",
            json!({
                "type": "object", "required": ["name"],
                "properties": { "name": string, "config": schema("TopicConfig") },
            }),
        ),
        (
            "Topic",
            json!({
                "type": "object",
                "properties": {
                    "name": string, "config": schema("TopicConfig"),
                    "partitions": { "type": "array", "items": { "type": "object", "properties": {
                        "partition": uint, "start_offset": uint, "end_offset": uint, "size_bytes": uint } } },
                    "subscriptions": { "type": "array", "items": schema("Subscription") },
                },
            }),
        ),
        (
            "TopicList",
            json!({
                "type": "object", "properties": { "topics": { "type": "array", "items": schema("Topic") } },
            }),
        ),
        (
            "CreateSubscription",
            json!({
                "type": "object", "required": ["name"],
                "properties": { "name": string, "config": schema("SubscriptionConfig") },
            }),
        ),
        (
            "Subscription",
            json!({
                "type": "object", "properties": { "name": string, "config": schema("SubscriptionConfig") },
            }),
        ),
        (
            "SubscriptionList",
            json!({
                "type": "object",
                "properties": { "subscriptions": { "type": "array", "items": schema("Subscription") } },
            }),
        ),
        (
            "SubscriptionStats",
            json!({
                "type": "object",
                "properties": {
                    "mode": { "type": "string", "enum": ["queue", "stream"] },
                    "backlog": uint, "in_flight": uint, "lag": uint, "scheduled": uint,
                    "dead_lettered": uint, "consumers": uint,
                    "partitions": { "type": "array", "items": { "type": "object", "properties": {
                        "partition": uint, "start_offset": uint, "end_offset": uint, "floor": uint, "backlog": uint } } },
                },
            }),
        ),
        (
            "DeadLetter",
            json!({
                "type": "object",
                "properties": {
                    "offset": { "description": "Offset in the dead-letter topic", "type": "integer" },
                    "dead_lettered_at": time, "reason": string, "attempts": uint, "error": { "type": ["string", "null"] },
                    "partition": uint, "source_offset": uint, "event": schema("CloudEvent"),
                },
            }),
        ),
        (
            "DeadLetterList",
            json!({
                "type": "object",
                "properties": { "dead_letter_topic": string, "messages": { "type": "array", "items": schema("DeadLetter") } },
            }),
        ),
        (
            "RedriveRequest",
            json!({
                "type": "object", "properties": { "max": { "type": "integer", "minimum": 1, "default": 1000 } },
            }),
        ),
        ("RedriveResponse", json!({ "type": "object", "properties": { "moved": uint } })),
        (
            "OtlpExportRequest",
            json!({ "type": "object", "description": "OTLP/JSON ExportTraceServiceRequest (opentelemetry-proto); unknown fields are ignored",
                    "properties": { "resourceSpans": { "type": "array", "items": { "type": "object" } } } }),
        ),
        (
            "OtlpExportResponse",
            json!({ "type": "object", "properties": { "partialSuccess": { "type": "object",
                "properties": { "rejectedSpans": string, "errorMessage": string } } } }),
        ),
        (
            "ServiceGraph",
            json!({ "type": "object", "properties": {
                "window": string, "at_s": uint, "pending_spans": uint,
                "nodes": { "type": "array", "items": { "type": "object", "properties": {
                    "id": string, "kind": { "enum": ["service", "topic", "subscription"] }, "name": string,
                    "rate_in": { "type": "number" }, "rate_out": { "type": "number" }, "errors_per_second": { "type": "number" },
                    "virtual_node": { "type": "boolean" }, "subscription": { "type": ["object", "null"] },
                    "congested": { "type": "array", "items": schema("Congestion") } } } },
                "edges": { "type": "array", "items": { "type": "object", "properties": {
                    "id": string, "kind": { "enum": ["sync", "publish", "deliver", "consume"] }, "source": string, "target": string,
                    "rate": { "type": "number" }, "error_rate": { "type": "number" }, "redelivery_rate": { "type": "number" },
                    "latency": { "type": ["object", "null"] }, "end_to_end": { "type": ["object", "null"] },
                    "connection_type": string, "congested": { "type": "array", "items": schema("Congestion") } } } },
                "dropped": { "type": "object", "properties": {
                    "nodes": uint, "edges": uint, "pending": uint, "unpaired": uint, "invalid_names": uint } },
            } }),
        ),
        ("Congestion", json!({ "type": "object", "properties": { "kind": string, "detail": string } })),
        (
            "GraphHistory",
            json!({ "type": "object", "properties": {
                "id": string, "window": string, "slot_seconds": uint,
                "points": { "type": "array", "items": { "type": "object" } },
                "readings": { "type": "array", "items": { "type": "object" } } } }),
        ),
    ])
}

/// An object of entries, built one `json!` at a time (one big `json!` exceeds the macro
/// recursion limit).
fn object(entries: Vec<(&str, Value)>) -> Value {
    Value::Object(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}
