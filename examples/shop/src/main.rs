//! `shop`: runs the shop's services in one process on the embedded broker, each with its
//! own SQLite database in a data directory, and prints the addresses a person uses.

use std::path::{Path, PathBuf};

use clap::Parser;
use shop::catalog::Catalog;
use shop::email::EmailService;
use shop::inventory::InventoryService;
use shop::order::OrderService;
use shop::payment::PaymentService;
use shop::payment::provider::{self, ProviderConfig};
use shop::shipping::ShippingService;

/// The reference shop, all in one process.
#[derive(Parser)]
struct Args {
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

async fn sqlite(dir: &Path, name: &str) -> anyhow::Result<sqlx::SqlitePool> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join(name))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(10));
    Ok(sqlx::SqlitePool::connect_with(options).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)?;
    let bus =
        switchboard::Bus::connect(&format!("embedded:{}", args.data_dir.join("broker").display())).await?;
    let catalog = Catalog::reference();

    let provider_listener = tokio::net::TcpListener::bind(args.provider).await?;
    let provider_url = format!("http://{}", provider_listener.local_addr()?);
    let config = ProviderConfig { decline_rate: args.decline_rate, ..ProviderConfig::default() };
    tokio::spawn(async move { axum::serve(provider_listener, provider::router(config)).await });

    let inventory_db = sqlite(&args.data_dir, "inventory.db").await?;
    let inventory = InventoryService::start(inventory_db.clone(), bus.clone(), &catalog).await?;
    let grpc_listener = tokio::net::TcpListener::bind(args.inventory_grpc).await?;
    let inventory_url = format!("http://{}", grpc_listener.local_addr()?);
    let _grpc = shop::inventory::grpc::serve(inventory_db, grpc_listener);
    let stock = shop::inventory::grpc::StockCheck::new(&inventory_url)?;
    let payment =
        PaymentService::start(sqlite(&args.data_dir, "payment.db").await?, bus.clone(), provider_url.clone())
            .await?;
    let maildir = args.data_dir.join("mail");
    let inbox = std::sync::Arc::new(
        switchboard::layers::SqliteInbox::new(
            sqlite(&args.data_dir, "email.db").await?,
            std::time::Duration::from_secs(7 * 86_400),
        )
        .await?,
    );
    let mut emails = Vec::new();
    for _ in 0..args.email_instances.max(1) {
        emails.push(EmailService::start(bus.clone(), maildir.clone(), inbox.clone()).await?);
    }
    let shipping = ShippingService::start(sqlite(&args.data_dir, "shipping.db").await?, bus.clone()).await?;
    let mut order =
        OrderService::start(sqlite(&args.data_dir, "order.db").await?, bus, catalog, Some(stock)).await?;

    let listener = tokio::net::TcpListener::bind(args.http).await?;
    println!("storefront REST API: http://{}/orders", listener.local_addr()?);
    println!("inventory gRPC (CheckStock): {inventory_url}");
    println!("simulated payment provider: {provider_url}");
    println!("emails (.eml): {}", maildir.join("new").display());
    axum::serve(listener, order.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    order.shutdown().await;
    payment.shutdown().await;
    inventory.shutdown().await;
    shipping.shutdown().await;
    for email in emails {
        email.shutdown().await;
    }
    Ok(())
}
