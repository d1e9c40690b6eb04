//! `shop`: the reference shop. With no subcommand (or `all`) every service runs in this
//! process on the embedded broker, each with its own SQLite database in a data directory.
//! A subcommand runs one service alone against any broker and database, changing only URLs:
//!
//! ```text
//! shop order     --broker switchboard://127.0.0.1:50051 --db postgres://postgres@127.0.0.1/test --inventory-grpc-url http://127.0.0.1:8082
//! shop inventory --broker amqp://guest:guest@127.0.0.1:5672/%2f --db sqlite:inventory.db
//! shop payment   --broker nats://127.0.0.1:4222 --db sqlite:payment.db --provider-url http://127.0.0.1:8081
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shop::catalog::Catalog;
use shop::email::EmailService;
use shop::inventory::InventoryService;
use shop::inventory::grpc::StockCheck;
use shop::order::OrderService;
use shop::payment::PaymentService;
use shop::payment::provider::{self, ProviderConfig};
use shop::shipping::ShippingService;
use switchboard::Bus;
use switchboard::layers::InboxStore;

/// The reference shop.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    service: Option<Service>,
    #[command(flatten)]
    all: AllInOne,
}

#[derive(Subcommand)]
enum Service {
    /// Every service in this process on the embedded broker (the default).
    All(AllInOne),
    /// The order service: the storefront REST API, the order log, checkout.
    Order {
        #[command(flatten)]
        common: Common,
        /// The storefront REST API's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// The inventory service's gRPC address, for the stock check.
        #[arg(long)]
        inventory_grpc_url: Option<String>,
    },
    /// The inventory service: stock, its gRPC check and the reserve/release commands.
    Inventory {
        #[command(flatten)]
        common: Common,
        /// The gRPC `CheckStock` address.
        #[arg(long, default_value = "127.0.0.1:8082")]
        grpc: std::net::SocketAddr,
    },
    /// The payment service: charges and refunds through the provider.
    Payment {
        #[command(flatten)]
        common: Common,
        /// The payment provider's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        provider_url: String,
    },
    /// Email instances competing for the `emails` queue.
    Email {
        #[command(flatten)]
        common: Common,
        /// Where the `.eml` files go (`new/` under it).
        #[arg(long, default_value = "shop-mail")]
        maildir: PathBuf,
        /// How many instances to run in this process.
        #[arg(long, default_value_t = 1)]
        instances: u32,
    },
    /// The shipping service, following the `orders` log.
    Shipping {
        #[command(flatten)]
        common: Common,
    },
    /// The simulated payment provider.
    Provider {
        /// Its address.
        #[arg(long, default_value = "127.0.0.1:8081")]
        http: std::net::SocketAddr,
        /// The share of payments it declines (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        decline_rate: f64,
        /// How long each answer takes, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
}

/// What every single service needs: a broker and a database.
#[derive(Args)]
struct Common {
    /// The broker: `embedded:<dir>`, `switchboard://host:port`, `amqp://…`, `nats://host:port`.
    #[arg(long, env = "SHOP_BROKER")]
    broker: String,
    /// The service's database: `sqlite:<file>` or `postgres://…`.
    #[arg(long, env = "SHOP_DB")]
    db: String,
}

#[derive(Args, Clone)]
struct AllInOne {
    /// Where the broker's log and the services' SQLite databases live.
    #[arg(long, default_value = "shop-data")]
    data_dir: PathBuf,
    /// The storefront REST API's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    /// The inventory gRPC service's address.
    #[arg(long, default_value = "127.0.0.1:8082")]
    inventory_grpc: std::net::SocketAddr,
    /// The simulated payment provider's address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    provider: std::net::SocketAddr,
    /// The share of payments the simulated provider declines (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    decline_rate: f64,
    /// How many competing email instances to run.
    #[arg(long, default_value_t = 2)]
    email_instances: u32,
}

/// A database pool of either kind, chosen by URL.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

async fn connect_db(url: &str) -> anyhow::Result<Db> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        Ok(Db::Sqlite(sqlite(Path::new(path.trim_start_matches("//"))).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Db::Postgres(sqlx::PgPool::connect(url).await?))
    } else {
        anyhow::bail!("database URL {url:?}: use sqlite:<file> or postgres://…")
    }
}

async fn sqlite(file: &Path) -> anyhow::Result<sqlx::SqlitePool> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    Ok(sqlx::SqlitePool::connect_with(options).await?)
}

async fn until_stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn serve(listener: tokio::net::TcpListener, router: axum::Router) -> anyhow::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(until_stopped()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let cli = Cli::parse();
    match cli.service {
        None => all_in_one(cli.all).await,
        Some(Service::All(all)) => all_in_one(all).await,
        Some(Service::Order { common, http, inventory_grpc_url }) => {
            let bus = Bus::connect(&common.broker).await?;
            let stock = inventory_grpc_url.as_deref().map(StockCheck::new).transpose()?;
            let listener = tokio::net::TcpListener::bind(http).await?;
            println!("order: storefront REST API on http://{}/orders", listener.local_addr()?);
            match connect_db(&common.db).await? {
                Db::Sqlite(pool) => {
                    let mut order = OrderService::start(pool, bus, Catalog::reference(), stock).await?;
                    serve(listener, order.router()).await?;
                    order.shutdown().await;
                }
                Db::Postgres(pool) => {
                    let mut order = OrderService::start(pool, bus, Catalog::reference(), stock).await?;
                    serve(listener, order.router()).await?;
                    order.shutdown().await;
                }
            }
            Ok(())
        }
        Some(Service::Inventory { common, grpc }) => {
            let bus = Bus::connect(&common.broker).await?;
            let listener = tokio::net::TcpListener::bind(grpc).await?;
            println!("inventory: gRPC CheckStock on http://{}", listener.local_addr()?);
            let catalog = Catalog::reference();
            let inventory = match connect_db(&common.db).await? {
                Db::Sqlite(pool) => {
                    let _grpc = shop::inventory::grpc::serve(pool.clone(), listener);
                    let service = InventoryService::start(pool, bus, &catalog).await?;
                    until_stopped().await;
                    service
                }
                Db::Postgres(pool) => {
                    let _grpc = shop::inventory::grpc::serve(pool.clone(), listener);
                    let service = InventoryService::start(pool, bus, &catalog).await?;
                    until_stopped().await;
                    service
                }
            };
            inventory.shutdown().await;
            Ok(())
        }
        Some(Service::Payment { common, provider_url }) => {
            let bus = Bus::connect(&common.broker).await?;
            let payment = match connect_db(&common.db).await? {
                Db::Sqlite(pool) => PaymentService::start(pool, bus, provider_url).await?,
                Db::Postgres(pool) => PaymentService::start(pool, bus, provider_url).await?,
            };
            println!("payment: answering payment.commands");
            until_stopped().await;
            payment.shutdown().await;
            Ok(())
        }
        Some(Service::Email { common, maildir, instances }) => {
            let bus = Bus::connect(&common.broker).await?;
            let window = Duration::from_secs(7 * 86_400);
            let inbox: Arc<dyn InboxStore> = match connect_db(&common.db).await? {
                Db::Sqlite(pool) => Arc::new(switchboard::layers::SqliteInbox::new(pool, window).await?),
                Db::Postgres(pool) => Arc::new(switchboard::layers::PostgresInbox::new(pool, window).await?),
            };
            let mut emails = Vec::new();
            for _ in 0..instances.max(1) {
                emails.push(EmailService::start(bus.clone(), maildir.clone(), inbox.clone()).await?);
            }
            println!("email: {} instance(s) writing to {}", emails.len(), maildir.join("new").display());
            until_stopped().await;
            for email in emails {
                email.shutdown().await;
            }
            Ok(())
        }
        Some(Service::Shipping { common }) => {
            let bus = Bus::connect(&common.broker).await?;
            let shipping = match connect_db(&common.db).await? {
                Db::Sqlite(pool) => ShippingService::start(pool, bus).await?,
                Db::Postgres(pool) => ShippingService::start(pool, bus).await?,
            };
            println!("shipping: following the orders log");
            until_stopped().await;
            shipping.shutdown().await;
            Ok(())
        }
        Some(Service::Provider { http, decline_rate, latency_ms }) => {
            let listener = tokio::net::TcpListener::bind(http).await?;
            println!("payment provider (simulated) on http://{}", listener.local_addr()?);
            let config = ProviderConfig {
                decline_rate,
                latency: Duration::from_millis(latency_ms),
                ..ProviderConfig::default()
            };
            serve(listener, provider::router(config)).await
        }
    }
}

async fn all_in_one(args: AllInOne) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let bus = Bus::connect(&format!("embedded:{}", args.data_dir.join("broker").display())).await?;
    let catalog = Catalog::reference();
    let dir = args.data_dir.clone();
    let db = |name: &'static str| sqlite_in(dir.clone(), name);

    let provider_listener = tokio::net::TcpListener::bind(args.provider).await?;
    let provider_url = format!("http://{}", provider_listener.local_addr()?);
    let config = ProviderConfig { decline_rate: args.decline_rate, ..ProviderConfig::default() };
    tokio::spawn(async move { axum::serve(provider_listener, provider::router(config)).await });

    let inventory_db = db("inventory.db").await?;
    let inventory = InventoryService::start(inventory_db.clone(), bus.clone(), &catalog).await?;
    let grpc_listener = tokio::net::TcpListener::bind(args.inventory_grpc).await?;
    let inventory_url = format!("http://{}", grpc_listener.local_addr()?);
    let _grpc = shop::inventory::grpc::serve(inventory_db, grpc_listener);
    let stock = StockCheck::new(&inventory_url)?;
    let payment = PaymentService::start(db("payment.db").await?, bus.clone(), provider_url.clone()).await?;
    let maildir = args.data_dir.join("mail");
    let inbox = Arc::new(
        switchboard::layers::SqliteInbox::new(db("email.db").await?, Duration::from_secs(7 * 86_400)).await?,
    );
    let mut emails = Vec::new();
    for _ in 0..args.email_instances.max(1) {
        emails.push(EmailService::start(bus.clone(), maildir.clone(), inbox.clone()).await?);
    }
    let shipping = ShippingService::start(db("shipping.db").await?, bus.clone()).await?;
    let mut order = OrderService::start(db("order.db").await?, bus, catalog, Some(stock)).await?;

    let listener = tokio::net::TcpListener::bind(args.http).await?;
    println!("storefront REST API: http://{}/orders", listener.local_addr()?);
    println!("inventory gRPC (CheckStock): {inventory_url}");
    println!("simulated payment provider: {provider_url}");
    println!("emails (.eml): {}", maildir.join("new").display());
    serve(listener, order.router()).await?;
    order.shutdown().await;
    payment.shutdown().await;
    inventory.shutdown().await;
    shipping.shutdown().await;
    for email in emails {
        email.shutdown().await;
    }
    Ok(())
}

async fn sqlite_in(dir: PathBuf, name: &'static str) -> anyhow::Result<sqlx::SqlitePool> {
    sqlite(&dir.join(name)).await
}
