//! `shop`: runs the order service on the embedded broker with SQLite state in a data
//! directory, and prints the address of its REST API.

use std::path::PathBuf;

use clap::Parser;
use shop::catalog::Catalog;
use shop::order::OrderService;

/// The reference shop.
#[derive(Parser)]
struct Args {
    /// Where the broker's log and the SQLite databases live.
    #[arg(long, default_value = "shop-data")]
    data_dir: PathBuf,
    /// The storefront REST API's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)?;
    let bus =
        switchboard::Bus::connect(&format!("embedded:{}", args.data_dir.join("broker").display())).await?;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(args.data_dir.join("order.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(10));
    let pool = sqlx::SqlitePool::connect_with(options).await?;
    let mut order = OrderService::start(pool, bus, Catalog::reference()).await?;
    let listener = tokio::net::TcpListener::bind(args.http).await?;
    println!("storefront REST API: http://{}/orders", listener.local_addr()?);
    axum::serve(listener, order.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    order.shutdown().await;
    Ok(())
}
