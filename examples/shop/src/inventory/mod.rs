//! The inventory service: stock in its own database; `stock.reserve` and `stock.release`
//! commands over the `inventory.commands` queue, each answered to its `replyto`; never
//! oversells (see [`store`]). It follows the `orders` log too: a confirmed order's
//! reservation becomes a sale.

pub mod grpc;
pub mod store;

use serde::{Deserialize, Serialize};
use switchboard::{Bus, Handled, HandlerError, Incoming, Message, Middleware, Router, RunningRouter};
use switchboard::{Start, SubscriptionName, SubscriptionSpec, TopicName};
use tower::Layer;

pub use store::{InventoryDatabase, Reservation, Stock};

use crate::catalog::Catalog;
use crate::order::aggregate::Line;

/// The queue of inventory commands.
pub const COMMANDS_TOPIC: &str = "inventory.commands";

/// `stock.reserve`: set aside the lines of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    /// The order.
    pub order: String,
    /// What it needs.
    pub lines: Vec<Line>,
}

/// `stock.release`: give an order's stock back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The order.
    pub order: String,
}

/// The inventory service's running parts.
pub struct InventoryService {
    router: RunningRouter,
}

impl InventoryService {
    /// Creates the stock from `catalog` on first start and answers commands from `bus`.
    ///
    /// # Errors
    /// The tables cannot be created, or the bus refuses the subscription.
    pub async fn start<DB: InventoryDatabase>(
        pool: sqlx::Pool<DB>,
        bus: Bus,
        catalog: &Catalog,
    ) -> anyhow::Result<Self> {
        let initial: Vec<(String, i64)> =
            catalog.products().iter().map(|p| (p.sku.clone(), p.initial_stock)).collect();
        DB::create_inventory_tables(&pool, &initial).await?;
        let topic = TopicName::new(COMMANDS_TOPIC)?;
        bus.create_topic(&topic, 1).await?;
        let orders = TopicName::new(crate::order::ORDERS_TOPIC)?;
        bus.create_topic(&orders, 1).await?;
        let commits = pool.clone();
        let handler = tower::service_fn(move |incoming: Incoming| handle(pool.clone(), incoming));
        let committer = tower::service_fn(move |incoming: Incoming| commit(commits.clone(), incoming));
        let spec = SubscriptionSpec::queue(SubscriptionName::from_static("inventory"));
        let sales = SubscriptionSpec::stream(SubscriptionName::from_static("inventory-sales"))
            .with_start(Start::Earliest);
        let router = Router::new(bus)
            .route("inventory", topic, spec, Middleware::default().layer(handler))
            .route("inventory-sales", orders, sales, Middleware::default().layer(committer))
            .start()
            .await?;
        Ok(InventoryService { router })
    }

    /// Finishes the commands in flight and stops.
    pub async fn shutdown(self) {
        let _ = self.router.shutdown().await;
    }
}

async fn handle<DB: InventoryDatabase>(pool: sqlx::Pool<DB>, incoming: Incoming) -> Handled {
    let now = crate::now_ms();
    let reply = |ty: &str, body: serde_json::Value| {
        incoming
            .reply(
                Message::new("/shop/inventory", ty, body.to_string()).with_content_type("application/json"),
            )
            .map_err(HandlerError::permanent)
    };
    match incoming.message.ty.as_str() {
        "stock.reserve" => {
            let command: Reserve =
                serde_json::from_slice(&incoming.message.data).map_err(HandlerError::permanent)?;
            let outcome = DB::reserve(&pool, &command.order, &command.lines, now)
                .await
                .map_err(HandlerError::transient)?;
            let answer = match outcome {
                Reservation::Reserved => {
                    reply("stock.reserved", serde_json::json!({ "order": command.order }))?
                }
                Reservation::Unavailable { sku } => {
                    reply("stock.unavailable", serde_json::json!({ "order": command.order, "sku": sku }))?
                }
                Reservation::Released => reply(
                    "stock.unavailable",
                    serde_json::json!({ "order": command.order, "reason": "the order was released" }),
                )?,
            };
            Ok(vec![answer])
        }
        "stock.release" => {
            let command: Release =
                serde_json::from_slice(&incoming.message.data).map_err(HandlerError::permanent)?;
            DB::release(&pool, &command.order, now).await.map_err(HandlerError::transient)?;
            Ok(vec![reply("stock.released", serde_json::json!({ "order": command.order }))?])
        }
        other => Err(HandlerError::permanent(format!("inventory does not know the command {other:?}"))),
    }
}

/// `order.confirmed` on the log: the order's reservation is sold. Every other event is
/// not inventory's business.
async fn commit<DB: InventoryDatabase>(pool: sqlx::Pool<DB>, incoming: Incoming) -> Handled {
    if incoming.message.ty != "order.confirmed" {
        return Ok(Vec::new());
    }
    let Some(order) = incoming.message.subject.as_deref().and_then(crate::order::read_model::order_id) else {
        return Err(HandlerError::permanent(format!("order event {} names no order", incoming.message.id)));
    };
    if !DB::commit(&pool, order, crate::now_ms()).await.map_err(HandlerError::transient)? {
        tracing::debug!(order, "A confirmed order had no open reservation (already sold).");
    }
    Ok(Vec::new())
}
