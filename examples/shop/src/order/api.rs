//! The order service's public REST API: place (with an `Idempotency-Key`), get, list,
//! edit and cancel orders. Errors are `application/problem+json` (RFC 9457).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchboard::eventstore::{EventStoreError, Repository, RepositoryError};

use super::aggregate::{Line, Order, OrderCommand, OrderEvent, OrderRejected, OrderStatus, RequestedLine};
use super::graphql::OrderFilter;
use super::store::{KeyState, OrderRow, ShopDatabase};
use crate::catalog::Catalog;
use crate::inventory::grpc::{Availability, StockCheck};
use switchboard::eventstore::Aggregate;

/// The largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// How long an idempotency key whose request never answered (its process died) stays
/// locked before a retry may take it over.
const STALE_CLAIM_MS: i64 = 30_000;

/// What the handlers share.
pub struct OrderApi<DB: ShopDatabase> {
    orders: Repository<Order, DB>,
    pool: sqlx::Pool<DB>,
    catalog: Catalog,
    stock: Option<StockCheck>,
    waiters: Arc<super::waiters::Waiters>,
}

impl<DB: ShopDatabase> OrderApi<DB> {
    /// The API over `orders` (the repository of the event-sourced orders), with its own
    /// tables in `pool`, checking new orders against inventory through `stock` when given.
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn new(
        orders: Repository<Order, DB>,
        pool: sqlx::Pool<DB>,
        catalog: Catalog,
        stock: Option<StockCheck>,
    ) -> Result<Self, sqlx::Error> {
        DB::create_shop_tables(&pool).await?;
        let waiters = super::waiters::Waiters::start(orders.store().clone())
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("the order feed: {e}")))?;
        Ok(OrderApi { orders, pool, catalog, stock, waiters })
    }

    /// The routes, under `/orders`.
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/orders", post(place::<DB>).get(list::<DB>))
            .route("/orders/{id}", get(fetch::<DB>))
            .route("/orders/{id}/lines", put(edit::<DB>))
            .route("/orders/{id}/cancel", post(cancel::<DB>))
            .route("/openapi.json", get(openapi))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(Arc::new(self))
    }
}

/// A request to place an order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// The customer's email address.
    pub customer: String,
    /// What they want: 1 to 50 lines.
    pub lines: Vec<RequestedLine>,
}

/// A request to replace an order's lines.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditOrder {
    /// The new lines.
    pub lines: Vec<RequestedLine>,
}

/// A request to cancel an order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// Why (1 to 500 characters).
    pub reason: String,
}

/// An order as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderView {
    /// Its id.
    pub id: String,
    /// Where it is.
    pub status: OrderStatus,
    /// The customer's email address.
    pub customer: String,
    /// The priced lines.
    pub lines: Vec<Line>,
    /// Their sum, in cents.
    pub total_cents: i64,
    /// Why it was canceled.
    pub cancel_reason: Option<String>,
    /// Its stream version: how many changes it went through.
    pub version: u64,
}

/// One page of the order list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// The orders, oldest first.
    pub orders: Vec<OrderView>,
    /// The cursor of the next page (`after=`), if there may be one.
    pub next: Option<String>,
}

/// The list's query.
#[derive(Clone, Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only orders in this status: `pending`, `confirmed` or `canceled`.
    status: Option<String>,
    /// Orders per page, 1 to 100 (default 20).
    limit: Option<i64>,
    /// The `next` cursor of the page before.
    after: Option<String>,
}

/// An error as `application/problem+json`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, kind, detail: detail.into() }
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> Problem {
        tracing::error!(%error, "The order service failed a request.");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the order service failed; try again")
    }
}

/// An error's body (RFC 9457, `application/problem+json`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProblemDocument {
    /// What kind of problem: `https://switchboard.dev/shop/problems/<kind>`, where kind is
    /// `invalid-order`, `unknown-product`, `out-of-stock`, `no-such-order`, `order-final`,
    /// `edited-during-checkout`, `concurrent-change`, `idempotency-key-reused`,
    /// `request-in-progress`, `bad-idempotency-key`, `malformed-request`, `too-large`,
    /// `unsupported-media-type`, `bad-query` or `internal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
}

impl Problem {
    /// The RFC 9457 body: also what an idempotency key stores as its answer.
    fn body(&self) -> String {
        let document = ProblemDocument {
            kind: format!("https://switchboard.dev/shop/problems/{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
        };
        serde_json::to_string(&document).unwrap_or_default()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

impl From<RepositoryError<OrderRejected>> for Problem {
    fn from(error: RepositoryError<OrderRejected>) -> Problem {
        match error {
            RepositoryError::Refused(rejected) => rejected.into(),
            RepositoryError::Store(EventStoreError::WrongExpectedVersion { .. }) => Problem::new(
                StatusCode::CONFLICT,
                "concurrent-change",
                "the order changed while this request was handled; try again",
            ),
            RepositoryError::Store(e) => Problem::internal(e),
        }
    }
}

impl From<OrderRejected> for Problem {
    fn from(rejected: OrderRejected) -> Problem {
        let (status, kind) = match &rejected {
            OrderRejected::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-order"),
            OrderRejected::UnknownProduct(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown-product"),
            OrderRejected::AlreadyPlaced => (StatusCode::CONFLICT, "already-placed"),
            OrderRejected::NotFound => (StatusCode::NOT_FOUND, "no-such-order"),
            OrderRejected::Final(_) => (StatusCode::CONFLICT, "order-final"),
            OrderRejected::EditedDuringCheckout => (StatusCode::CONFLICT, "edited-during-checkout"),
        };
        Problem::new(status, kind, rejected.to_string())
    }
}

/// `Json<T>` whose rejections are problems too (a wrong content type, malformed JSON, an
/// unknown field, a body over the limit).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    let status = rejection.status();
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        _ => "malformed-request",
    };
    Problem::new(status, kind, rejection.body_text())
}

fn view(id: &str, order: Order, version: u64) -> OrderView {
    OrderView {
        id: id.to_owned(),
        status: order.status,
        customer: order.customer,
        lines: order.lines,
        total_cents: order.total_cents,
        cancel_reason: order.cancel_reason,
        version,
    }
}

/// Order ids are ours: `o-` and 32 hex digits (time-ordered).
pub(crate) fn is_order_id(id: &str) -> bool {
    id.strip_prefix("o-").is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_id(id: &str) -> Result<(), Problem> {
    if is_order_id(id) {
        Ok(())
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "no-such-order", format!("no order {id:?}")))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned())).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-idempotency-key",
            "Idempotency-Key is 1 to 255 printable ASCII characters",
        )
    })
}

fn created(view: &OrderView) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Places an order. With an `Idempotency-Key`, a repeat of the same request answers what
/// the first did and creates nothing; the same key with a different body is refused.
#[utoipa::path(post, path = "/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters; the same key and body give the same answer")),
    request_body = PlaceOrder,
    responses(
        (status = 201, description = "Placed; checkout runs next", body = OrderView, headers(("Location" = String))),
        (status = 400, description = "Malformed JSON or a bad Idempotency-Key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Out of stock now, or the key's first request still running", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Over 64 KiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "An invalid order, an unknown product, or a reused key", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn place<DB: ShopDatabase>(
    State(api): State<Arc<OrderApi<DB>>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlaceOrder>,
) -> Result<Response, Problem> {
    let Some(key) = idempotency_key(&headers)? else {
        let id = format!("o-{}", switchboard_core::new_message_id());
        return Ok(created(&api.place_order(&id, &request).await?));
    };
    let hash =
        format!("{:016x}", switchboard_core::fnv1a_64(&serde_json::to_vec(&request).unwrap_or_default()));
    let fresh_id = format!("o-{}", switchboard_core::new_message_id());
    let id = match DB::claim_key(&api.pool, &key, &hash, &fresh_id, crate::now_ms())
        .await
        .map_err(Problem::internal)?
    {
        KeyState::Claimed => fresh_id,
        KeyState::Seen { request_hash, .. } if request_hash != hash => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "this Idempotency-Key was used for a different request",
            ));
        }
        KeyState::Seen { answer: Some((status, body)), .. } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(response);
        }
        KeyState::Seen { resource_id, claimed_at, .. } => {
            // Its first request is still running, or died before answering: after a while a
            // retry takes over, with the order id the first one chose.
            let stale = crate::now_ms() - claimed_at > STALE_CLAIM_MS;
            if !stale
                || !DB::reclaim_key(&api.pool, &key, claimed_at, crate::now_ms())
                    .await
                    .map_err(Problem::internal)?
            {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "request-in-progress",
                    "a request with this Idempotency-Key is still being handled; retry shortly",
                ));
            }
            resource_id
        }
    };
    match api.place_order(&id, &request).await {
        Ok(view) => {
            let body = serde_json::to_string(&view).map_err(Problem::internal)?;
            DB::answer_key(&api.pool, &key, StatusCode::CREATED.as_u16(), &body)
                .await
                .map_err(Problem::internal)?;
            Ok(created(&view))
        }
        Err(problem) if problem.status.is_client_error() => {
            // A refusal is an answer too: the same request gets the same refusal.
            let body = problem.body();
            DB::answer_key(&api.pool, &key, problem.status.as_u16(), &body)
                .await
                .map_err(Problem::internal)?;
            Err(problem)
        }
        Err(problem) => {
            let _ = DB::release_key(&api.pool, &key).await;
            Err(problem)
        }
    }
}

impl<DB: ShopDatabase> OrderApi<DB> {
    /// Places order `id`; a retry of a placement that already went through (same id)
    /// answers with the order as it is.
    async fn place_order(&self, id: &str, request: &PlaceOrder) -> Result<OrderView, Problem> {
        let command = OrderCommand::Place {
            customer: request.customer.clone(),
            lines: request.lines.clone(),
            catalog: self.catalog.clone(),
        };
        // The request is checked before inventory is asked about it.
        let placed = Order::default().handle(&command)?;
        if let (Some(stock), Some(OrderEvent::Created { lines, .. })) = (&self.stock, placed.first()) {
            self.check_stock(stock, lines).await?;
        }
        match self.orders.execute(id, &command).await {
            Ok(done) => Ok(view(id, done.state, done.version)),
            Err(RepositoryError::Refused(OrderRejected::AlreadyPlaced)) => self.fetch_order(id).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses an order inventory cannot fill now, at once (the synchronous edge). When
    /// inventory does not answer, the order goes ahead: the reservation in checkout
    /// decides anyway, and a slow inventory should not stop the storefront.
    async fn check_stock(&self, stock: &StockCheck, lines: &[Line]) -> Result<(), Problem> {
        let items: Vec<(String, i64)> = lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        match stock.check(&items).await {
            Ok(Availability::InStock) => Ok(()),
            Ok(Availability::Short(short)) => {
                let detail = short
                    .iter()
                    .map(|(sku, requested, on_hand)| {
                        format!("{sku}: {requested} requested, {on_hand} in stock")
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(Problem::new(StatusCode::CONFLICT, "out-of-stock", detail))
            }
            Err(e) => {
                tracing::warn!(error = %e, "The stock check failed; the order goes ahead to checkout.");
                Ok(())
            }
        }
    }

    async fn fetch_order(&self, id: &str) -> Result<OrderView, Problem> {
        let loaded = self.orders.load(id).await.map_err(Problem::internal)?;
        if loaded.version == 0 {
            return Err(Problem::new(StatusCode::NOT_FOUND, "no-such-order", format!("no order {id:?}")));
        }
        Ok(view(id, loaded.state, loaded.version))
    }
}

/// Reads an order (from its events: always current). With `Prefer: wait=N` a pending order
/// is answered once it is confirmed or canceled, or after N seconds (at most 30).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(
        ("id" = String, Path, description = "The order id: `o-` and 32 hex digits"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: hold a pending order's answer until it is final or N seconds pass (RFC 7240)"),
    ),
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn fetch<DB: ShopDatabase>(
    State(api): State<Arc<OrderApi<DB>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    check_id(&id)?;
    let Some(wait) = super::waiters::preferred_wait(&headers) else {
        return Ok(axum::Json(api.fetch_order(&id).await?).into_response());
    };
    let outcome = api.waiters.register(&id);
    let order = api.fetch_order(&id).await?;
    let order = if order.status == OrderStatus::Pending {
        let _ = tokio::time::timeout(wait, outcome).await;
        api.waiters.forget(&id);
        api.fetch_order(&id).await?
    } else {
        api.waiters.forget(&id);
        order
    };
    let mut response = axum::Json(order).into_response();
    if let Ok(applied) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
        response.headers_mut().insert("preference-applied", applied);
    }
    Ok(response)
}

/// Replaces an order's lines while checkout has not finished.
#[utoipa::path(put, path = "/orders/{id}/lines", tag = "orders",
    params(("id" = String, Path, description = "The order id")),
    request_body = EditOrder,
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The order is final, or changed concurrently", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn edit<DB: ShopDatabase>(
    State(api): State<Arc<OrderApi<DB>>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<EditOrder>,
) -> Result<axum::Json<OrderView>, Problem> {
    check_id(&id)?;
    let command = OrderCommand::Edit { lines: request.lines, catalog: api.catalog.clone() };
    let done = api.orders.execute(&id, &command).await?;
    Ok(axum::Json(view(&id, done.state, done.version)))
}

/// Cancels an order that is not confirmed; canceling twice is canceling once.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "The order id")),
    request_body = CancelOrder,
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Already confirmed", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn cancel<DB: ShopDatabase>(
    State(api): State<Arc<OrderApi<DB>>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<CancelOrder>,
) -> Result<axum::Json<OrderView>, Problem> {
    check_id(&id)?;
    let done = api.orders.execute(&id, &OrderCommand::Cancel { reason: request.reason }).await?;
    Ok(axum::Json(view(&id, done.state, done.version)))
}

/// Lists orders oldest first, a page at a time (from the order list projection: it may lag
/// the events by a moment).
#[utoipa::path(get, path = "/orders", tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, body = ProblemDocument, content_type = "application/problem+json"),
    ))]
async fn list<DB: ShopDatabase>(
    State(api): State<Arc<OrderApi<DB>>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<OrderPage>, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "bad-query", e.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "bad-query", "limit is 1 to 100"));
    }
    let status = match query.status.as_deref() {
        None => None,
        Some(s @ ("pending" | "confirmed" | "canceled")) => Some(s),
        Some(other) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                format!("status {other:?}: one of pending, confirmed, canceled"),
            ));
        }
    };
    let after = match query.after.as_deref() {
        None => None,
        Some(cursor) => Some(super::graphql::parse_cursor(cursor).ok_or_else(|| {
            Problem::new(StatusCode::BAD_REQUEST, "bad-query", "after is a cursor from `next`")
        })?),
    };
    let filter = OrderFilter { status: status.map(str::to_owned), customer: None, after, limit };
    let rows = DB::order_rows(&api.pool, &filter).await.map_err(Problem::internal)?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| super::graphql::cursor(r.created_at, &r.id)))
        .flatten();
    let orders = rows.into_iter().map(row_view).collect::<Result<_, _>>()?;
    Ok(axum::Json(OrderPage { orders, next }))
}

fn row_view(row: OrderRow) -> Result<OrderView, Problem> {
    let status = OrderStatus::parse(&row.status)
        .ok_or_else(|| Problem::internal(format!("order {} has status {:?}", row.id, row.status)))?;
    Ok(OrderView {
        id: row.id,
        status,
        customer: row.customer,
        lines: serde_json::from_str(&row.lines).map_err(Problem::internal)?,
        total_cents: row.total_cents,
        cancel_reason: row.cancel_reason,
        version: u64::try_from(row.version).unwrap_or(0),
    })
}

/// The storefront's OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Shop storefront", description = "Place, read, list, edit and cancel orders. Errors are application/problem+json (RFC 9457). The read model is GraphQL at /graphql."),
    paths(place, fetch, list, edit, cancel),
    components(schemas(PlaceOrder, EditOrder, CancelOrder, OrderView, OrderPage, ProblemDocument, Line, RequestedLine, OrderStatus)),
    tags((name = "orders", description = "The order service's REST API"))
)]
pub struct ApiDoc;

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(<ApiDoc as utoipa::OpenApi>::openapi())
}
