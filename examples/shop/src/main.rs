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
use shop::deployment::{Databases, Shop, ShopConfig};
use shop::email::{EmailService, Mailer};
use shop::invariants::{Balance, Books};
use shop::inventory::InventoryService;
use shop::inventory::grpc::StockCheck;
use shop::load::LoadConfig;
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
        /// Also hand every email to this SMTP relay (`smtp://host:port`, plain SMTP).
        #[arg(long, env = "SHOP_SMTP")]
        smtp_url: Option<String>,
    },
    /// The shipping service, following the `orders` log.
    Shipping {
        #[command(flatten)]
        common: Common,
    },
    /// Places orders on a storefront and follows each to its end; checks the books after.
    Load(LoadArgs),
    /// Checks the books of a shop whose databases are SQLite files in a data directory.
    Check {
        /// The shop's data directory (as `shop --data-dir` or deploy.sh use).
        #[arg(long, default_value = "shop-data")]
        data_dir: PathBuf,
        /// Print the balance as JSON.
        #[arg(long)]
        json: bool,
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
    /// Also hand every email to this SMTP relay (`smtp://host:port`, plain SMTP).
    #[arg(long, env = "SHOP_SMTP")]
    smtp_url: Option<String>,
}

/// `shop load`.
#[derive(Args)]
struct LoadArgs {
    /// The storefront's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How many orders to place.
    #[arg(long, default_value_t = 1_000)]
    orders: u64,
    /// Orders per second (0: as fast as the concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The most checkouts in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The share of orders the simulated provider declines.
    #[arg(long, default_value_t = 0.1)]
    decline_share: f64,
    /// Seconds an order may take to end before it counts as unsettled.
    #[arg(long, default_value_t = 60)]
    settle_timeout: u64,
    /// After the run, check the books of the shop in this data directory (SQLite files).
    #[arg(long)]
    check_data_dir: Option<PathBuf>,
    /// Print the summary as JSON (no progress bar).
    #[arg(long)]
    json: bool,
}

impl Common {
    /// Starts exporting spans if `OTEL_EXPORTER_OTLP_ENDPOINT` says where (as `service`,
    /// unless `OTEL_SERVICE_NAME` says otherwise), and connects to the broker under that
    /// name, so `switchboard serve` draws this service on its map even without spans.
    async fn connect(
        &self,
        service: &str,
    ) -> anyhow::Result<(Bus, Option<switchboard::telemetry::Telemetry>)> {
        let telemetry = switchboard::telemetry::init_from_env(service)?;
        let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.is_empty());
        let url = named(&self.broker, name.as_deref().unwrap_or(service));
        Ok((Bus::connect(&url).await?, telemetry))
    }
}

/// A `switchboard://` URL with `service=<name>` unless it names one already; other brokers
/// have no such parameter.
fn named(broker: &str, service: &str) -> String {
    let is_switchboard = broker.starts_with("switchboard://") || broker.starts_with("switchboards://");
    if !is_switchboard || broker.contains("service=") {
        return broker.to_owned();
    }
    let separator = if broker.contains('?') { '&' } else { '?' };
    format!("{broker}{separator}service={service}")
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
            let (bus, _telemetry) = common.connect("order").await?;
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
            let (bus, _telemetry) = common.connect("inventory").await?;
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
            let (bus, _telemetry) = common.connect("payment").await?;
            let payment = match connect_db(&common.db).await? {
                Db::Sqlite(pool) => PaymentService::start(pool, bus, provider_url).await?,
                Db::Postgres(pool) => PaymentService::start(pool, bus, provider_url).await?,
            };
            println!("payment: answering payment.commands");
            until_stopped().await;
            payment.shutdown().await;
            Ok(())
        }
        Some(Service::Email { common, maildir, instances, smtp_url }) => {
            let mailer = match &smtp_url {
                Some(url) => Mailer::maildir(maildir.clone()).with_smtp(url)?,
                None => Mailer::maildir(maildir.clone()),
            };
            let (bus, _telemetry) = common.connect("email").await?;
            let window = Duration::from_secs(7 * 86_400);
            let inbox: Arc<dyn InboxStore> = match connect_db(&common.db).await? {
                Db::Sqlite(pool) => Arc::new(switchboard::layers::SqliteInbox::new(pool, window).await?),
                Db::Postgres(pool) => Arc::new(switchboard::layers::PostgresInbox::new(pool, window).await?),
            };
            let mut emails = Vec::new();
            for _ in 0..instances.max(1) {
                emails.push(EmailService::start(bus.clone(), mailer.clone(), inbox.clone()).await?);
            }
            println!("email: {} instance(s) writing to {}", emails.len(), maildir.join("new").display());
            until_stopped().await;
            for email in emails {
                email.shutdown().await;
            }
            Ok(())
        }
        Some(Service::Shipping { common }) => {
            let (bus, _telemetry) = common.connect("shipping").await?;
            let shipping = match connect_db(&common.db).await? {
                Db::Sqlite(pool) => ShippingService::start(pool, bus).await?,
                Db::Postgres(pool) => ShippingService::start(pool, bus).await?,
            };
            println!("shipping: following the orders log");
            until_stopped().await;
            shipping.shutdown().await;
            Ok(())
        }
        Some(Service::Load(args)) => load(args).await,
        Some(Service::Check { data_dir, json }) => {
            let balance = books_in(&data_dir).await?.check().await?;
            print_balance(&balance, json)?;
            if balance.balanced() { Ok(()) } else { std::process::exit(1) }
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
    let dir = &args.data_dir;
    let email = sqlite(&dir.join("email.db")).await?;
    let dbs = Databases {
        order: sqlite(&dir.join("order.db")).await?,
        inventory: sqlite(&dir.join("inventory.db")).await?,
        payment: sqlite(&dir.join("payment.db")).await?,
        shipping: sqlite(&dir.join("shipping.db")).await?,
        inbox: Arc::new(switchboard::layers::SqliteInbox::new(email, Duration::from_secs(7 * 86_400)).await?),
    };
    let config = ShopConfig {
        http: args.http,
        inventory_grpc: args.inventory_grpc,
        provider: args.provider,
        provider_config: ProviderConfig { decline_rate: args.decline_rate, ..ProviderConfig::default() },
        email_instances: args.email_instances.max(1) as usize,
        shipping: true,
        maildir: dir.join("mail"),
        smtp: args.smtp_url.clone(),
        catalog: Catalog::reference(),
    };
    let shop = Shop::start(dbs, bus, config).await?;
    println!("storefront REST API:      {}/orders", shop.storefront);
    println!("GraphQL read model:       {}/graphql", shop.storefront);
    println!("inventory gRPC CheckStock: {}", shop.inventory_grpc);
    println!("simulated payment provider: {}", shop.provider);
    println!("emails (.eml):            {}", shop.maildir.join("new").display());
    println!("broker: embedded, in {}", dir.join("broker").display());
    until_stopped().await;
    shop.shutdown().await;
    Ok(())
}

/// The books of a shop whose SQLite files are in `dir`.
async fn books_in(dir: &Path) -> anyhow::Result<Books<sqlx::Sqlite>> {
    Ok(Books {
        order: sqlite(&dir.join("order.db")).await?,
        inventory: sqlite(&dir.join("inventory.db")).await?,
        payment: sqlite(&dir.join("payment.db")).await?,
        shipping: sqlite(&dir.join("shipping.db")).await?,
        maildir: dir.join("mail"),
        catalog: Catalog::reference(),
    })
}

fn print_balance(balance: &Balance, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(balance)?);
        return Ok(());
    }
    println!(
        "books: {} orders ({} confirmed, {} canceled, {} pending); charges − refunds {} cents for confirmed totals of {} cents; {} emails; {} shipping requests",
        balance.orders,
        balance.confirmed,
        balance.canceled,
        balance.pending,
        balance.charged_cents,
        balance.confirmed_cents,
        balance.emails,
        balance.shipments
    );
    if balance.balanced() {
        println!(
            "invariants: balanced (stock, payments, one email per outcome, one shipment per confirmed order)"
        );
    } else {
        println!("invariants: {} violation(s)", balance.violations.len());
        for violation in balance.violations.iter().take(20) {
            println!("  - {violation}");
        }
    }
    Ok(())
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let config = LoadConfig {
        storefront: args.url.trim_end_matches('/').to_owned(),
        orders: args.orders,
        rate: args.rate,
        concurrency: args.concurrency,
        decline_share: args.decline_share,
        settle_timeout: Duration::from_secs(args.settle_timeout),
        run_id: switchboard_core::new_message_id(),
    };
    let bar =
        if args.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(args.orders) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} orders ended  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker = bar.clone();
    let report = shop::load::run(config, move |done| ticker.set_position(done)).await?;
    bar.finish_and_clear();
    let balance = match &args.check_data_dir {
        Some(dir) => Some(books_in(dir).await?.settle(Duration::from_secs(args.settle_timeout)).await?),
        None => None,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "load": report, "books": balance }))?
        );
    } else {
        let canceled: u64 = report.canceled.values().sum();
        println!(
            "{} orders in {:.1} s: {:.1} checkouts/s; checkout latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            report.requested,
            report.seconds,
            report.checkouts_per_second,
            report.latency_ms.p50,
            report.latency_ms.p90,
            report.latency_ms.p99,
            report.latency_ms.max
        );
        println!(
            "outcomes: {} confirmed, {canceled} canceled {:?}, {} rejected {:?}, {} unsettled; {} retried requests",
            report.confirmed,
            report.canceled,
            report.rejected.values().sum::<u64>(),
            report.rejected,
            report.unsettled,
            report.retries
        );
        if let Some(balance) = &balance {
            print_balance(balance, false)?;
        }
    }
    let failed = report.unsettled > 0 || balance.as_ref().is_some_and(|b| !b.balanced());
    if failed { std::process::exit(1) } else { Ok(()) }
}
