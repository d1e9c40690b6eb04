//! The whole shop in one process: every service on one bus, each on its own database, with
//! the storefront, the inventory gRPC check and the simulated provider on real sockets.
//! What `shop` runs by default (on the embedded broker and SQLite files), and what the
//! end-to-end tests start (on any broker and either database).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use switchboard::Bus;
use switchboard::layers::InboxStore;
use switchboard::projection::Projection;
use tokio::net::TcpListener;

use crate::catalog::Catalog;
use crate::email::{EmailService, Mailer};
use crate::inventory::grpc::StockCheck;
use crate::inventory::{InventoryDatabase, InventoryService};
use crate::order::facts::Facts;
use crate::order::{OrderList, OrderService, ShopDatabase};
use crate::payment::provider::{self, ProviderConfig};
use crate::payment::{PaymentDatabase, PaymentService};
use crate::shipping::{ShippingDatabase, ShippingRequests, ShippingService};

/// A database that every service can keep its state in.
pub trait AnyShopDatabase: ShopDatabase + InventoryDatabase + PaymentDatabase + ShippingDatabase {}

impl AnyShopDatabase for sqlx::Sqlite {}
impl AnyShopDatabase for sqlx::Postgres {}

/// Each service's own database (one kind for all, as in one deployment).
pub struct Databases<DB: sqlx::Database> {
    /// Orders, their events, checkout state, the read model.
    pub order: sqlx::Pool<DB>,
    /// Stock and reservations.
    pub inventory: sqlx::Pool<DB>,
    /// Payments.
    pub payment: sqlx::Pool<DB>,
    /// Shipping requests.
    pub shipping: sqlx::Pool<DB>,
    /// The email instances' shared inbox.
    pub inbox: Arc<dyn InboxStore>,
}

/// How the shop runs: where it listens and how its parts behave.
#[derive(Clone, Debug)]
pub struct ShopConfig {
    /// The storefront (REST and GraphQL).
    pub http: SocketAddr,
    /// The inventory gRPC check.
    pub inventory_grpc: SocketAddr,
    /// The simulated payment provider.
    pub provider: SocketAddr,
    /// How the provider behaves.
    pub provider_config: ProviderConfig,
    /// Competing email instances (0: email is down).
    pub email_instances: usize,
    /// Whether shipping runs (tests start it late to show the replay).
    pub shipping: bool,
    /// Where the `.eml` files go.
    pub maildir: PathBuf,
    /// The SMTP relay email hands every message to (`smtp://host:port`), if any.
    pub smtp: Option<String>,
    /// What is sold.
    pub catalog: Catalog,
}

impl ShopConfig {
    /// Every port chosen by the system, mail under `maildir`: what tests use.
    pub fn ephemeral(maildir: PathBuf) -> ShopConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ShopConfig {
            http: any,
            inventory_grpc: any,
            provider: any,
            provider_config: ProviderConfig::default(),
            email_instances: 2,
            shipping: true,
            maildir,
            smtp: None,
            catalog: Catalog::reference(),
        }
    }
}

/// The shop, running.
pub struct Shop<DB: AnyShopDatabase>
where
    OrderList: Projection<DB>,
    Facts: Projection<DB>,
    ShippingRequests<DB>: Projection<DB>,
{
    /// The storefront's base URL (`http://host:port`): `/orders`, `/graphql`.
    pub storefront: String,
    /// The inventory gRPC check's URL.
    pub inventory_grpc: String,
    /// The simulated provider's URL.
    pub provider: String,
    /// The bus every service talks over.
    pub bus: Bus,
    /// The order service.
    pub order: OrderService<DB>,
    /// Inventory's database.
    pub inventory_db: sqlx::Pool<DB>,
    /// Payment's database.
    pub payment_db: sqlx::Pool<DB>,
    /// Shipping's database.
    pub shipping_db: sqlx::Pool<DB>,
    /// Where email writes.
    pub maildir: PathBuf,
    mailer: Mailer,
    inventory: InventoryService,
    payment: PaymentService,
    shipping: Option<ShippingService>,
    emails: Vec<EmailService>,
    inbox: Arc<dyn InboxStore>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl<DB: AnyShopDatabase> Shop<DB>
where
    OrderList: Projection<DB>,
    Facts: Projection<DB>,
    ShippingRequests<DB>: Projection<DB>,
{
    /// Starts every service on `bus`, each on its database.
    ///
    /// # Errors
    /// A socket cannot be bound, a database refuses its tables, or the bus its topics.
    pub async fn start(dbs: Databases<DB>, bus: Bus, config: ShopConfig) -> anyhow::Result<Self> {
        let Databases {
            order: order_db,
            inventory: inventory_db,
            payment: payment_db,
            shipping: shipping_db,
            inbox,
        } = dbs;
        let mut servers = Vec::new();
        let provider_listener = TcpListener::bind(config.provider).await?;
        let provider_url = format!("http://{}", provider_listener.local_addr()?);
        let provider_router = provider::router(config.provider_config.clone());
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(provider_listener, provider_router).await;
        }));

        let inventory = InventoryService::start(inventory_db.clone(), bus.clone(), &config.catalog).await?;
        let grpc_listener = TcpListener::bind(config.inventory_grpc).await?;
        let inventory_url = format!("http://{}", grpc_listener.local_addr()?);
        servers.push(crate::inventory::grpc::serve(inventory_db.clone(), grpc_listener));
        let payment = PaymentService::start(payment_db.clone(), bus.clone(), provider_url.clone()).await?;
        let mailer = match &config.smtp {
            Some(url) => Mailer::maildir(config.maildir.clone()).with_smtp(url)?,
            None => Mailer::maildir(config.maildir.clone()),
        };
        let mut shop_emails = Vec::new();
        for _ in 0..config.email_instances {
            shop_emails.push(EmailService::start(bus.clone(), mailer.clone(), inbox.clone()).await?);
        }
        let shipping = if config.shipping {
            Some(ShippingService::start(shipping_db.clone(), bus.clone()).await?)
        } else {
            None
        };
        let stock = StockCheck::new(&inventory_url)?;
        let mut order = OrderService::start(order_db, bus.clone(), config.catalog, Some(stock)).await?;
        let listener = TcpListener::bind(config.http).await?;
        let storefront = format!("http://{}", listener.local_addr()?);
        let router = order.router();
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        Ok(Shop {
            storefront,
            inventory_grpc: inventory_url,
            provider: provider_url,
            bus,
            order,
            inventory_db,
            payment_db,
            shipping_db,
            maildir: config.maildir,
            mailer,
            inventory,
            payment,
            shipping,
            emails: shop_emails,
            inbox,
            servers,
        })
    }

    /// Starts `instances` more email instances (after email was down).
    ///
    /// # Errors
    /// The bus refuses the subscription.
    pub async fn start_emails(&mut self, instances: usize) -> anyhow::Result<()> {
        for _ in 0..instances {
            self.emails
                .push(EmailService::start(self.bus.clone(), self.mailer.clone(), self.inbox.clone()).await?);
        }
        Ok(())
    }

    /// Starts shipping (when it was not started), on its database as it is.
    ///
    /// # Errors
    /// The bus refuses the subscription.
    pub async fn start_shipping(&mut self) -> anyhow::Result<()> {
        if self.shipping.is_none() {
            self.shipping = Some(ShippingService::start(self.shipping_db.clone(), self.bus.clone()).await?);
        }
        Ok(())
    }

    /// Shipping, when it runs.
    pub fn shipping(&self) -> Option<&ShippingService> {
        self.shipping.as_ref()
    }

    /// Stops every service after what it has in flight: the storefront first, so nothing
    /// new arrives, then the services that start work, then the ones that finish it.
    pub async fn shutdown(self) {
        for server in &self.servers {
            server.abort();
        }
        self.order.shutdown().await;
        self.inventory.shutdown().await;
        self.payment.shutdown().await;
        if let Some(shipping) = self.shipping {
            shipping.shutdown().await;
        }
        for email in self.emails {
            email.shutdown().await;
        }
    }
}

/// Every topic of the shop, with the subscriptions its services make on it.
const TOPICS: [(&str, &[&str]); 8] = [
    (crate::order::ORDERS_TOPIC, &["order-emails", "inventory-sales", "shipping"]),
    (crate::payment::PAYMENTS_TOPIC, &["shop-payments"]),
    (crate::shipping::SHIPMENTS_TOPIC, &["shop-shipments"]),
    (crate::email::SENT_TOPIC, &["shop-emails"]),
    (crate::email::EMAILS_TOPIC, &["email"]),
    (crate::inventory::COMMANDS_TOPIC, &["inventory"]),
    (crate::payment::COMMANDS_TOPIC, &["payment"]),
    ("checkout.replies", &["checkout-orchestrator"]),
];

/// Deletes every topic and subscription of the shop from the broker behind `bus`, so a
/// new deployment on a broker that keeps them (RabbitMQ, NATS, `switchboard serve`) starts
/// empty. What is not there is skipped.
///
/// # Errors
/// The broker refuses a deletion.
pub async fn reset_broker(bus: &Bus) -> anyhow::Result<()> {
    use switchboard::{BusError, SubscriptionName, TopicName};
    let backend = bus.backend();
    for (topic, subscriptions) in TOPICS {
        let topic = TopicName::new(topic)?;
        for subscription in subscriptions {
            match backend.delete_subscription(&topic, &SubscriptionName::new(*subscription)?).await {
                Ok(()) | Err(BusError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match backend.delete_topic(&topic).await {
            Ok(()) | Err(BusError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
