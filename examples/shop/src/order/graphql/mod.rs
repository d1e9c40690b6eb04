//! The GraphQL read model: orders with their status, lines, payment, shipment and the
//! emails sent, filterable by status and customer and paginated by cursor. It reads only
//! projections (the order list and the facts of the other services), never the services
//! themselves, so it answers while any of them is down.
//!
//! `POST /graphql` runs a query (`application/json`); `GET /graphql` is GraphiQL. A query
//! is bounded: depth and complexity limits, and at most 100 orders a page.

pub mod queries;
pub mod types;

use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql::{Context, EmptyMutation, EmptySubscription, ID, Object, Result, Schema};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

pub use queries::{EmailRow, OrderFilter, PaymentRow, ReadModelDatabase, ShipmentRow};
use types::{Order, OrderConnection, OrderStatus, PageInfo};

use super::store::OrderRow;

/// The most orders one page holds.
pub const MAX_PAGE: i32 = 100;
/// How deep a query may nest (GraphiQL's introspection query needs about 13).
const MAX_DEPTH: usize = 16;
/// How many fields a query may ask for, lists counted by their page size.
const MAX_COMPLEXITY: usize = 5_000;

/// The read model's store, whichever database it is on.
#[async_trait::async_trait]
pub trait ReadModelStore: Send + Sync {
    /// One order.
    async fn order(&self, id: &str) -> Result<Option<OrderRow>, sqlx::Error>;
    /// A page of orders.
    async fn orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRow>, sqlx::Error>;
    /// An order's payment.
    async fn payment(&self, order: &str) -> Result<Option<PaymentRow>, sqlx::Error>;
    /// An order's shipment.
    async fn shipment(&self, order: &str) -> Result<Option<ShipmentRow>, sqlx::Error>;
    /// The emails about an order.
    async fn emails(&self, order: &str) -> Result<Vec<EmailRow>, sqlx::Error>;
}

/// What resolvers read from.
pub type ReadModel = Arc<dyn ReadModelStore>;

struct Pooled<DB: sqlx::Database>(sqlx::Pool<DB>);

#[async_trait::async_trait]
impl<DB: ReadModelDatabase> ReadModelStore for Pooled<DB> {
    async fn order(&self, id: &str) -> Result<Option<OrderRow>, sqlx::Error> {
        DB::order_row(&self.0, id).await
    }
    async fn orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRow>, sqlx::Error> {
        DB::order_rows(&self.0, filter).await
    }
    async fn payment(&self, order: &str) -> Result<Option<PaymentRow>, sqlx::Error> {
        DB::payment_row(&self.0, order).await
    }
    async fn shipment(&self, order: &str) -> Result<Option<ShipmentRow>, sqlx::Error> {
        DB::shipment_row(&self.0, order).await
    }
    async fn emails(&self, order: &str) -> Result<Vec<EmailRow>, sqlx::Error> {
        DB::email_rows(&self.0, order).await
    }
}

/// The read model over `pool`.
pub fn read_model<DB: ReadModelDatabase>(pool: sqlx::Pool<DB>) -> ReadModel {
    Arc::new(Pooled(pool))
}

/// The queries.
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// One order by id; null when there is none.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Order>> {
        if !super::api::is_order_id(&id) {
            return Ok(None);
        }
        ctx.data::<ReadModel>()?.order(&id).await?.map(Order::from_row).transpose()
    }

    /// Orders, oldest first: `first` (1 to 100, default 20) after the `after` cursor, of
    /// one status or one customer when given.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        status: Option<OrderStatus>,
        customer: Option<String>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<OrderConnection> {
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(format!("first is 1 to {MAX_PAGE}, not {first}").into());
        }
        let after = match after {
            None => None,
            Some(cursor) => Some(parse_cursor(&cursor).ok_or("after is an endCursor from an earlier page")?),
        };
        let filter = OrderFilter {
            status: status.map(|s| s.as_str().to_owned()),
            customer,
            after,
            limit: i64::from(first),
        };
        let rows = ctx.data::<ReadModel>()?.orders(&filter).await?;
        let end_cursor = rows.last().map(|r| cursor(r.created_at, &r.id));
        let has_next_page = rows.len() == first as usize;
        let nodes = rows.into_iter().map(Order::from_row).collect::<Result<Vec<_>>>()?;
        Ok(OrderConnection { nodes, page_info: PageInfo { has_next_page, end_cursor } })
    }
}

/// A page cursor: the last order's creation time and id, the list's sort key.
pub(crate) fn cursor(created_at: i64, id: &str) -> String {
    format!("{created_at}.{id}")
}

/// A cursor from [`cursor`], if it is one.
pub(crate) fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, id.to_owned()))
}

/// The read model's schema.
pub type ReadModelSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

/// The schema over `model`, with its limits.
pub fn schema(model: ReadModel) -> ReadModelSchema {
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription)
        .data(model)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// `/graphql`: GraphiQL on GET, queries on POST.
pub fn router(schema: ReadModelSchema) -> axum::Router {
    axum::Router::new()
        .route("/graphql", get(graphiql).post(execute))
        .route("/graphql/schema.graphql", get(sdl))
        .with_state(schema)
}

async fn execute(
    axum::extract::State(schema): axum::extract::State<ReadModelSchema>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, super::api::Problem> {
    use super::api::Problem;
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "too-large" } else { "malformed-request" };
        Problem::new(status, kind, rejection.body_text())
    })?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send GraphQL requests as application/json",
        ));
    }
    let request: async_graphql::Request = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            format!("the body is not a GraphQL request ({{\"query\": …, \"variables\": …}}): {e}"),
        )
    })?;
    let response = schema.execute(request).await;
    // GraphQL over HTTP with plain JSON answers 200 even when the query had errors; they are
    // in `errors`.
    let body = serde_json::to_vec(&response).map_err(Problem::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").title("Shop read model").finish())
}

async fn sdl(axum::extract::State(schema): axum::extract::State<ReadModelSchema>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], schema.sdl())
}
