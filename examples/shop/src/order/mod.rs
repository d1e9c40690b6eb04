//! The order service: orders are event-sourced aggregates; their events go on the `orders`
//! log (through the outbox, in the append's transaction) and into the order list (a
//! projection); the REST API places, reads, lists, edits and cancels them.

pub mod aggregate;
pub mod api;
pub mod checkout;
pub mod facts;
pub mod graphql;
pub mod notifier;
pub mod read_model;
pub mod store;
pub mod waiters;

use std::time::Duration;
use switchboard::Bus;
use switchboard::TopicName;
use switchboard::eventstore::{EventStore, EventStoreOptions, Repository, SnapshotPolicy};
use switchboard::outbox::{Outbox, Relay, RunningRelay};

use switchboard::projection::{Projection, Projector, RunningProjection};
use switchboard::saga::{Orchestrator, RunningOrchestrator};

use checkout::{Checkout, CheckoutStarter};

pub use aggregate::{Order, OrderCommand, OrderEvent, OrderRejected, OrderStatus};
pub use api::OrderApi;
pub use read_model::OrderList;
pub use store::ShopDatabase;

use crate::catalog::Catalog;

/// The log of order events other services follow.
pub const ORDERS_TOPIC: &str = "orders";

/// The order service's running parts.
pub struct OrderService<DB: ShopDatabase>
where
    OrderList: Projection<DB>,
{
    /// Its event store.
    pub store: EventStore<DB>,
    /// Its order repository.
    pub orders: Repository<Order, DB>,
    /// The checkout orchestrator.
    pub checkout: Orchestrator<Checkout, DB>,
    relay: RunningRelay,
    list: RunningProjection<OrderList, DB>,
    starter: CheckoutStarter,
    orchestrator: RunningOrchestrator,
    notifier: switchboard::RunningRouter,
    facts: facts::RunningFacts,
    router: Option<axum::Router>,
}

impl<DB: ShopDatabase> OrderService<DB>
where
    OrderList: Projection<DB>,
    facts::Facts: Projection<DB>,
{
    /// Starts the service's relay, projection and checkout orchestrator on `pool`, talking
    /// to `bus`; new orders are checked against inventory's stock through `stock` when
    /// given.
    ///
    /// # Errors
    /// The tables cannot be created, or the bus refuses the topic.
    pub async fn start(
        pool: sqlx::Pool<DB>,
        bus: Bus,
        catalog: Catalog,
        stock: Option<crate::inventory::grpc::StockCheck>,
    ) -> anyhow::Result<Self> {
        let topic = TopicName::new(ORDERS_TOPIC)?;
        bus.create_topic(&topic, 1).await?;
        let outbox = Outbox::open(pool.clone()).await?;
        let options = EventStoreOptions::default().publish_to(outbox.clone(), topic, "/shop/order");
        let store = EventStore::open(pool.clone(), options).await?;
        let orders = Repository::<Order, DB>::new(store.clone())
            .with_snapshots(SnapshotPolicy::Every(50))
            .retry_on_conflict(5);
        let relay = Relay::new(outbox.clone(), bus.clone()).spawn();
        let list = Projector::new("shop-orders", OrderList, store.clone())?.start().await?;
        let checkout =
            Orchestrator::new(checkout::saga(orders.clone(), Duration::from_secs(10)), pool.clone(), outbox)
                .await?;
        let orchestrator = checkout.clone().spawn(bus.clone(), Duration::from_millis(200)).await?;
        let notifier = notifier::start(bus.clone(), orders.clone()).await?;
        let facts = facts::RunningFacts::start(pool.clone(), bus).await?;
        let read_model = graphql::schema(graphql::read_model(pool.clone()));
        let router = OrderApi::new(orders.clone(), pool, catalog, stock)
            .await?
            .router()
            .merge(graphql::router(read_model).layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY)));
        let starter = CheckoutStarter::start(store.clone(), checkout.clone()).await?;
        Ok(OrderService {
            store,
            orders,
            checkout,
            relay,
            list,
            starter,
            orchestrator,
            notifier,
            facts,
            router: Some(router),
        })
    }

    /// The REST API's routes (once).
    pub fn router(&mut self) -> axum::Router {
        // The caller's trace and deadline, and a server span per request.
        self.router.take().unwrap_or_default().layer(switchboard_sync::IncomingContextLayer::new())
    }

    /// The order list projection.
    pub fn list(&self) -> &RunningProjection<OrderList, DB> {
        &self.list
    }

    /// Stops the projection and the relay after what they have in flight.
    pub async fn shutdown(self) {
        self.starter.shutdown().await;
        let _ = self.notifier.shutdown().await;
        self.facts.shutdown().await;
        self.orchestrator.shutdown().await;
        self.list.shutdown().await;
        self.relay.shutdown().await;
    }
}
