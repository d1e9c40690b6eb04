//! The shop as a real deployment: every service its own `shop <service>` process with its
//! own SQLite file, talking through a broker reached by URL (`switchboard serve`, RabbitMQ,
//! NATS), under `shop load`'s generator; then the books are balanced from the databases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shop::catalog::Catalog;
use shop::invariants::{Balance, Books};
use shop::load::{LoadConfig, LoadReport};

/// A port free now (the service binds it a moment later; a restart binds it again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The shop's processes, killed when dropped.
pub(crate) struct Deployment {
    dir: tempfile::TempDir,
    storefront: String,
    args: BTreeMap<&'static str, Vec<String>>,
    children: BTreeMap<&'static str, Child>,
    /// Set in every service's environment.
    env: Vec<(String, String)>,
}

impl Deployment {
    async fn start(broker: &str) -> Deployment {
        Deployment::start_with_env(broker, Vec::new()).await
    }

    pub(crate) async fn start_with_env(broker: &str, env: Vec<(String, String)>) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let (http, grpc, provider) = (free_port(), free_port(), free_port());
        let d = |file: &str| format!("sqlite:{}", dir.path().join(file).display());
        let mut args: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        args.insert("provider", vec!["provider".into(), "--http".into(), format!("127.0.0.1:{provider}")]);
        let service = |name: &str, db: String, extra: &[String]| {
            let mut v = vec![name.to_owned(), "--broker".into(), broker.to_owned(), "--db".into(), db];
            v.extend_from_slice(extra);
            v
        };
        args.insert(
            "inventory",
            service("inventory", d("inventory.db"), &["--grpc".into(), format!("127.0.0.1:{grpc}")]),
        );
        args.insert(
            "payment",
            service(
                "payment",
                d("payment.db"),
                &["--provider-url".into(), format!("http://127.0.0.1:{provider}")],
            ),
        );
        let maildir = dir.path().join("mail").display().to_string();
        args.insert(
            "email",
            service("email", d("email.db"), &["--maildir".into(), maildir, "--instances".into(), "2".into()]),
        );
        args.insert("shipping", service("shipping", d("shipping.db"), &[]));
        args.insert(
            "order",
            service(
                "order",
                d("order.db"),
                &[
                    "--http".into(),
                    format!("127.0.0.1:{http}"),
                    "--inventory-grpc-url".into(),
                    format!("http://127.0.0.1:{grpc}"),
                ],
            ),
        );
        let mut deployment = Deployment {
            dir,
            storefront: format!("http://127.0.0.1:{http}"),
            args,
            children: BTreeMap::new(),
            env,
        };
        for name in ["provider", "inventory", "payment", "email", "shipping", "order"] {
            deployment.spawn(name);
        }
        deployment.wait_for_storefront().await;
        deployment
    }

    fn spawn(&mut self, name: &'static str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(&self.args[name])
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn a shop service");
        self.children.insert(name, child);
    }

    /// SIGKILLs the service: no shutdown, nothing flushed.
    pub(crate) fn kill(&mut self, name: &'static str) {
        if let Some(mut child) = self.children.remove(name) {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    async fn wait_for_storefront(&self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let up = http.get(format!("{}/orders?limit=1", self.storefront)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the storefront did not come up: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn logs(&self) -> String {
        let mut all = String::new();
        for name in self.args.keys() {
            let text =
                std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
            // The last 3,000 characters: where a failure's cause is.
            let start = text.char_indices().rev().nth(2_999).map_or(0, |(i, _)| i);
            all.push_str(&format!("\n--- {name} ---\n{}", &text[start..]));
        }
        all
    }

    async fn books(&self) -> Books<sqlx::Sqlite> {
        let open = |file: &str| sqlite(self.dir.path().join(file));
        Books {
            order: open("order.db").await,
            inventory: open("inventory.db").await,
            payment: open("payment.db").await,
            shipping: open("shipping.db").await,
            maildir: self.dir.path().join("mail"),
            catalog: Catalog::reference(),
        }
    }

    async fn balance(&self) -> Balance {
        self.books().await.settle(Duration::from_secs(90)).await.expect("books")
    }

    pub(crate) fn load(&self, orders: u64) -> LoadConfig {
        LoadConfig {
            storefront: self.storefront.clone(),
            orders,
            rate: 0.0,
            concurrency: 16,
            decline_share: 0.1,
            settle_timeout: Duration::from_secs(90),
            run_id: switchboard_core::new_message_id(),
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn sqlite(file: PathBuf) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    sqlx::SqlitePool::connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", Path::new(&file).display()))
}

fn assert_clean_run(report: &LoadReport, balance: &Balance, orders: u64, deployment: &Deployment) {
    assert_eq!(report.unsettled, 0, "every order ended: {report:?}{}", deployment.logs());
    assert!(report.rejected.is_empty(), "nothing refused: {report:?}");
    assert_eq!(report.confirmed + report.canceled.values().sum::<u64>(), orders, "{report:?}");
    assert!(balance.balanced(), "the books balance: {balance:#?}{}", deployment.logs());
    assert_eq!(balance.orders, orders, "one order per request, retries included: {balance:?}");
    assert_eq!((balance.confirmed, balance.canceled), (report.confirmed, orders - report.confirmed));
    assert_eq!(balance.emails, orders, "one email per outcome");
    assert_eq!(balance.shipments, report.confirmed, "one shipment per confirmed order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_in_its_own_process_on_switchboard_serve_survives_the_order_service_killed_mid_checkout()
 {
    const ORDERS: u64 = 300;
    let server = switchboard_testkit::TestServer::start().await;
    let mut deployment = Deployment::start(&server.url()).await;
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let load =
        tokio::spawn(shop::load::run(deployment.load(ORDERS), move |n| counter.store(n, Ordering::Relaxed)));

    // SIGKILL the order service twice while checkouts are in flight; it restarts on its
    // database as the kill left it.
    for at in [ORDERS / 4, ORDERS / 2] {
        while done.load(Ordering::Relaxed) < at {
            assert!(!load.is_finished(), "the load ended early");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        deployment.kill("order");
        tokio::time::sleep(Duration::from_millis(300)).await;
        deployment.spawn("order");
    }
    let report = load.await.expect("load task").expect("load");
    let balance = deployment.balance().await;

    assert_clean_run(&report, &balance, ORDERS, &deployment);
    assert!(report.retries > 0, "the kills were felt: requests were retried ({report:?})");
}

async fn run_on(broker: &str) {
    const ORDERS: u64 = 100;
    let bus = switchboard::Bus::connect(broker).await.expect("bus");
    shop::deployment::reset_broker(&bus).await.expect("reset");
    bus.close().await.expect("close");
    let deployment = Deployment::start(broker).await;
    let report = shop::load::run(deployment.load(ORDERS), |_| {}).await.expect("load");
    let balance = deployment.balance().await;
    assert_clean_run(&report, &balance, ORDERS, &deployment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_in_its_own_process_on_rabbitmq() {
    switchboard_testkit::require_service!(RabbitMq);
    run_on(&switchboard_testkit::rabbitmq_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_in_its_own_process_on_nats() {
    switchboard_testkit::require_service!(Nats);
    run_on(&switchboard_testkit::nats_url()).await;
}

/// The shop's diagram: every sync call and every async hop, and no others. Sync edges come
/// from the services' spans (exported over OTLP to the broker); async ones from what the
/// broker sees, under the name each service connects with.
pub(crate) const SHOP_EDGES: &[&str] = &[
    "consume subscription:checkout.replies/checkout-orchestrator -> service:order",
    "consume subscription:emails.sent/shop-emails -> service:order",
    "consume subscription:emails/email -> service:email",
    "consume subscription:inventory.commands/inventory -> service:inventory",
    "consume subscription:orders/inventory-sales -> service:inventory",
    "consume subscription:orders/order-emails -> service:order",
    "consume subscription:orders/shipping -> service:shipping",
    "consume subscription:payment.commands/payment -> service:payment",
    "consume subscription:payments/shop-payments -> service:order",
    "consume subscription:shipments/shop-shipments -> service:order",
    "deliver topic:checkout.replies -> subscription:checkout.replies/checkout-orchestrator",
    "deliver topic:emails -> subscription:emails/email",
    "deliver topic:emails.sent -> subscription:emails.sent/shop-emails",
    "deliver topic:inventory.commands -> subscription:inventory.commands/inventory",
    "deliver topic:orders -> subscription:orders/inventory-sales",
    "deliver topic:orders -> subscription:orders/order-emails",
    "deliver topic:orders -> subscription:orders/shipping",
    "deliver topic:payment.commands -> subscription:payment.commands/payment",
    "deliver topic:payments -> subscription:payments/shop-payments",
    "deliver topic:shipments -> subscription:shipments/shop-shipments",
    "publish service:email -> topic:emails.sent",
    "publish service:inventory -> topic:checkout.replies",
    "publish service:order -> topic:emails",
    "publish service:order -> topic:inventory.commands",
    "publish service:order -> topic:orders",
    "publish service:order -> topic:payment.commands",
    "publish service:payment -> topic:checkout.replies",
    "publish service:payment -> topic:payments",
    "publish service:shipping -> topic:shipments",
    "sync service:order -> service:inventory",
    "sync service:payment -> service:payment-provider",
    "sync service:user -> service:order",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_maps_exactly_the_shops_edges() {
    let server = switchboard_testkit::TestServer::start().await;
    let deployment = Deployment::start_with_env(&server.url(), exporting_to(&server)).await;
    let report = shop::load::run(deployment.load(40), |_| {}).await.expect("load");
    assert_eq!(report.unsettled, 0, "{report:?}{}", deployment.logs());

    // Spans arrive within a second; a call whose server exports none (the payment
    // provider) is drawn once its wait for a server span (10 s) is over.
    let telemetry = &server.server().state().telemetry;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let edges = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        telemetry.with_graph(|g| g.expire(now_s()));
        let view = telemetry.view(switchboard_graph::Window::OneMinute);
        let edges: Vec<String> = view.edges.iter().filter(|e| e.rate > 0.0).map(|e| e.id.clone()).collect();
        if edges.len() >= SHOP_EDGES.len() && edges.iter().any(|e| e.contains("payment-provider"))
            || tokio::time::Instant::now() > deadline
        {
            break edges;
        }
    };
    assert_eq!(edges, SHOP_EDGES, "the map of the shop{}", deployment.logs());
}

/// Every service exports its spans to `server`, every half second (the 5-second default
/// would only make the tests wait).
pub(crate) fn exporting_to(server: &switchboard_testkit::TestServer) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), server.http()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "500".to_owned()),
    ]
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
