//! Checkout end to end: order, inventory and payment (and the simulated provider) each with
//! their own database, talking over a durable embedded broker and HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use shop::catalog::Catalog;
use shop::email::EmailService;
use shop::inventory::{InventoryDatabase, InventoryService};
use shop::order::{OrderList, OrderService, ShopDatabase};
use shop::payment::provider::ProviderConfig;
use shop::payment::{PaymentDatabase, PaymentService};
use shop::shipping::{ShippingDatabase, ShippingRequests, ShippingService};
use std::sync::Arc;
use switchboard::layers::InboxStore;
use switchboard::projection::Projection;

/// Each service's database.
struct Databases<DB: sqlx::Database> {
    order: sqlx::Pool<DB>,
    inventory: sqlx::Pool<DB>,
    payment: sqlx::Pool<DB>,
    shipping: sqlx::Pool<DB>,
    /// The email instances' shared inbox.
    inbox: Arc<dyn InboxStore>,
}

/// Order, inventory and payment over one broker, each on its own database.
struct Shop<DB: ShopDatabase + InventoryDatabase + PaymentDatabase + ShippingDatabase>
where
    OrderList: Projection<DB>,
    ShippingRequests: Projection<DB>,
{
    base: String,
    http: reqwest::Client,
    inventory_db: sqlx::Pool<DB>,
    payment_db: sqlx::Pool<DB>,
    shipping_db: sqlx::Pool<DB>,
    order: OrderService<DB>,
    inventory: InventoryService,
    payment: PaymentService,
    shipping: Option<ShippingService>,
    emails: Vec<EmailService>,
    bus: switchboard::Bus,
    inbox: Arc<dyn InboxStore>,
    maildir: tempfile::TempDir,
}

impl<DB: ShopDatabase + InventoryDatabase + PaymentDatabase + ShippingDatabase> Shop<DB>
where
    OrderList: Projection<DB>,
    ShippingRequests: Projection<DB>,
{
    /// All five services, email with `email_instances` competing instances, shipping only
    /// when `with_shipping`.
    async fn start(
        dbs: Databases<DB>,
        bus: switchboard::Bus,
        email_instances: usize,
        with_shipping: bool,
    ) -> Self {
        let Databases {
            order: order_db,
            inventory: inventory_db,
            payment: payment_db,
            shipping: shipping_db,
            inbox,
        } = dbs;
        let provider = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let provider_url = format!("http://{}", provider.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(provider, shop::payment::provider::router(ProviderConfig::default())).await
        });
        let catalog = Catalog::reference();
        let inventory =
            InventoryService::start(inventory_db.clone(), bus.clone(), &catalog).await.expect("inventory");
        let payment =
            PaymentService::start(payment_db.clone(), bus.clone(), provider_url).await.expect("payment");
        let maildir = tempfile::tempdir().expect("maildir");
        let mut emails = Vec::new();
        for _ in 0..email_instances {
            let email = EmailService::start(bus.clone(), maildir.path().to_owned(), inbox.clone())
                .await
                .expect("email");
            emails.push(email);
        }
        let shipping = if with_shipping {
            Some(ShippingService::start(shipping_db.clone(), bus.clone()).await.expect("shipping"))
        } else {
            None
        };
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stock_url = format!("http://{}", grpc.local_addr().expect("addr"));
        let _grpc = shop::inventory::grpc::serve(inventory_db.clone(), grpc);
        let stock = shop::inventory::grpc::StockCheck::new(&stock_url).expect("client");
        let mut order =
            OrderService::start(order_db, bus.clone(), catalog, Some(stock)).await.expect("order");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = order.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Shop {
            base,
            http: reqwest::Client::new(),
            inventory_db,
            payment_db,
            shipping_db,
            order,
            inventory,
            payment,
            shipping,
            emails,
            bus,
            inbox,
            maildir,
        }
    }

    async fn place(&self, customer: &str, lines: &[(&str, i64)]) -> String {
        let body = json!({
            "customer": customer,
            "lines": lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect::<Vec<_>>(),
        });
        let order: Value = self
            .http
            .post(format!("{}/orders", self.base))
            .json(&body)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        order["id"].as_str().expect("id").to_owned()
    }

    /// Waits until the order is confirmed or canceled, and returns it.
    async fn settled(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let order: Value = self
                .http
                .get(format!("{}/orders/{id}", self.base))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if order["status"] != "pending" {
                return order;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {id} still pending after 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stock(&self, sku: &str) -> (i64, i64) {
        let stock = DB::stock(&self.inventory_db, sku).await.expect("stock").expect("product");
        (stock.on_hand, stock.reserved)
    }

    async fn payment(&self, order: &str) -> Option<String> {
        DB::payment(&self.payment_db, order).await.expect("payment").map(|p| p.state)
    }

    /// The emails written about `order`, waiting up to 30 s for `count` of them.
    async fn emails_about(&self, order: &str, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let about: Vec<String> = shop::email::sent(self.maildir.path())
                .expect("maildir")
                .into_iter()
                .map(|(_, text)| text)
                .filter(|text| text.contains(order))
                .collect();
            if about.len() >= count || tokio::time::Instant::now() > deadline {
                return about;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The orders with a shipping request, once shipping has applied `events` order events.
    async fn shipping_requests(&self, events: u64) -> Vec<String> {
        let shipping = self.shipping.as_ref().expect("shipping runs");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while shipping.applied() < events {
            assert!(
                tokio::time::Instant::now() < deadline,
                "shipping applied only {} events",
                shipping.applied()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        DB::shipping_requests(&self.shipping_db).await
    }

    async fn start_emails(&mut self, instances: usize) {
        for _ in 0..instances {
            let email =
                EmailService::start(self.bus.clone(), self.maildir.path().to_owned(), self.inbox.clone());
            self.emails.push(email.await.expect("email"));
        }
    }

    async fn start_shipping(&mut self) {
        let shipping =
            ShippingService::start(self.shipping_db.clone(), self.bus.clone()).await.expect("shipping");
        self.shipping = Some(shipping);
    }

    async fn emails_written(&self) -> usize {
        shop::email::sent(self.maildir.path()).expect("maildir").len()
    }

    async fn shutdown(self) {
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

/// A broker for one test: embedded (durable, in a temporary directory) or an in-process
/// `switchboard serve` reached over gRPC. Held, not read: dropping it stops the broker.
#[allow(dead_code)]
enum Broker {
    Embedded(tempfile::TempDir),
    Served(Box<switchboard_testkit::TestServer>),
}

impl Broker {
    async fn embedded() -> (switchboard::Bus, Broker) {
        let dir = tempfile::tempdir().expect("tempdir");
        let bus =
            switchboard::Bus::connect(&format!("embedded:{}", dir.path().display())).await.expect("bus");
        (bus, Broker::Embedded(dir))
    }

    async fn served() -> (switchboard::Bus, Broker) {
        let server = switchboard_testkit::TestServer::start().await;
        let bus = switchboard::Bus::connect(&server.url()).await.expect("switchboard:// bus");
        (bus, Broker::Served(Box::new(server)))
    }
}

macro_rules! checkout_cases {
    ($db:ident, $open:expr, $broker:expr) => {
        mod $db {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_checkout_reserves_charges_and_confirms_and_a_failed_one_gives_everything_back() {
                let (dbs, _guard) = $open;
                let (bus, _broker) = $broker;
                let shop = Shop::start(dbs, bus, 2, true).await;
                let catalog = Catalog::reference();
                let initial = |sku: &str| catalog.get(sku).expect("product").initial_stock;

                let happy =
                    shop.place("ada@example.com", &[("teapot-cast-iron", 2), ("tea-sencha", 1)]).await;
                let order = shop.settled(&happy).await;
                assert_eq!(order["status"], "confirmed", "{order}");
                assert_eq!(shop.stock("teapot-cast-iron").await, (initial("teapot-cast-iron") - 2, 2));
                assert_eq!(shop.payment(&happy).await.as_deref(), Some("charged"));

                // The simulated provider declines `decline…` customers.
                let declined = shop.place("decline@example.com", &[("kettle-gooseneck", 3)]).await;
                let order = shop.settled(&declined).await;
                assert_eq!(
                    (order["status"].as_str(), order["cancel_reason"].as_str()),
                    (Some("canceled"), Some("payment declined"))
                );
                assert_eq!(shop.payment(&declined).await.as_deref(), Some("declined"));

                // Out of stock: refused at once through inventory's gRPC check, nothing written.
                let head = shop.order.store.head().await.expect("head");
                let body = json!({"customer": "bo@example.com", "lines": [{"sku": "limited-print", "quantity": 5}]});
                let refused = shop.http.post(format!("{}/orders", shop.base)).json(&body).send().await.expect("post");
                assert_eq!(refused.status().as_u16(), 409);
                let problem: Value = refused.json().await.expect("problem");
                assert!(problem["type"].as_str().expect("type").ends_with("out-of-stock"), "{problem}");
                assert!(problem["detail"].as_str().expect("detail").contains("limited-print: 5 requested, 3 in stock"), "{problem}");
                assert_eq!(shop.order.store.head().await.expect("head"), head, "a refused order writes nothing");

                // Two orders that each pass the check but not both fit: the reservation decides.
                let (first, second) = tokio::join!(
                    shop.place("cy@example.com", &[("limited-print", 2)]),
                    shop.place("di@example.com", &[("limited-print", 2)])
                );
                let (a, b) = (shop.settled(&first).await, shop.settled(&second).await);
                let mut outcomes = [a["status"].as_str().expect("status"), b["status"].as_str().expect("status")];
                outcomes.sort_unstable();
                assert_eq!(outcomes, ["canceled", "confirmed"], "never oversold");
                let (winner, loser) = if a["status"] == "confirmed" { (&first, &second) } else { (&second, &first) };
                let lost = shop.settled(loser).await;
                assert_eq!(lost["cancel_reason"], "out of stock");
                assert_eq!(shop.payment(loser).await, None, "nothing was charged");

                // What failed was given back: only the confirmed orders hold stock.
                assert_eq!(shop.stock("kettle-gooseneck").await, (initial("kettle-gooseneck"), 0));
                assert_eq!(shop.stock("limited-print").await, (initial("limited-print") - 2, 2));
                assert_eq!(shop.stock("tea-sencha").await, (initial("tea-sencha") - 1, 1));

                // Every outcome emailed once, as an RFC 5322 message to the customer.
                let confirmed = shop.emails_about(&happy, 1).await;
                assert_eq!(confirmed.len(), 1, "one email for the confirmed order");
                assert!(confirmed[0].contains("To: ada@example.com") && confirmed[0].contains("is confirmed"), "{}", confirmed[0]);
                assert!(confirmed[0].contains("Message-ID: <email-") && confirmed[0].contains("From: "), "{}", confirmed[0]);
                for canceled in [&declined, loser] {
                    let emails = shop.emails_about(canceled, 1).await;
                    assert_eq!(emails.len(), 1, "one email for the canceled order");
                    assert!(emails[0].contains("was canceled"), "{}", emails[0]);
                }
                // Shipping: four order.created, two order.confirmed, two order.canceled.
                let mut shipped = vec![happy.clone(), winner.clone()];
                shipped.sort();
                assert_eq!(shop.shipping_requests(8).await, shipped, "only the confirmed orders ship");
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(shop.emails_written().await, 4, "no email twice");
                shop.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn with_email_down_no_order_is_lost_and_a_late_shipping_service_replays_the_log() {
                const ORDERS: usize = 200;
                let (dbs, _guard) = $open;
                let (bus, _broker) = $broker;
                let mut shop = Shop::start(dbs, bus, 0, false).await;
                let mut ids = Vec::new();
                for n in 0..ORDERS {
                    let customer = if n % 10 == 0 {
                        format!("decline{n}@example.com")
                    } else {
                        format!("c{n}@example.com")
                    };
                    ids.push(shop.place(&customer, &[("infuser-steel", 1)]).await);
                }
                let mut confirmed = Vec::new();
                for id in &ids {
                    if shop.settled(id).await["status"] == "confirmed" {
                        confirmed.push(id.clone());
                    }
                }
                assert_eq!(confirmed.len(), ORDERS - ORDERS / 10, "checkout does not wait for email");
                assert_eq!(shop.emails_written().await, 0, "no email instance runs");

                shop.start_emails(3).await;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while shop.emails_written().await < ORDERS {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "only {} emails",
                        shop.emails_written().await
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let emails = shop::email::sent(shop.maildir.path()).expect("maildir");
                assert_eq!(emails.len(), ORDERS, "every email exactly once after email came back");
                for id in &ids {
                    assert_eq!(
                        emails.iter().filter(|(_, text)| text.contains(id.as_str())).count(),
                        1,
                        "{id}"
                    );
                }

                // Shipping starts last, on an empty database, and replays the whole log.
                shop.start_shipping().await;
                confirmed.sort();
                assert_eq!(shop.shipping_requests((ORDERS * 2) as u64).await, confirmed);
                shop.shutdown().await;
            }
        }
    };
}

/// Each service's SQLite file in a temporary directory.
async fn sqlite_databases() -> (Databases<sqlx::Sqlite>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join(name))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        sqlx::SqlitePool::connect_with(options)
    };
    let email = open("email.db").await.expect("db");
    let inbox: Arc<dyn InboxStore> = Arc::new(
        switchboard::layers::SqliteInbox::new(email, Duration::from_secs(86_400)).await.expect("inbox"),
    );
    let dbs = Databases {
        order: open("order.db").await.expect("db"),
        inventory: open("inventory.db").await.expect("db"),
        payment: open("payment.db").await.expect("db"),
        shipping: open("shipping.db").await.expect("db"),
        inbox,
    };
    (dbs, dir)
}

checkout_cases!(sqlite, sqlite_databases().await, Broker::embedded().await);

checkout_cases!(sqlite_on_switchboard_serve, sqlite_databases().await, Broker::served().await);

checkout_cases!(
    postgres,
    {
        switchboard_testkit::require_service!(Postgres);
        let (order, a) = switchboard_testkit::pg::pool(8).await;
        let (inventory, b) = switchboard_testkit::pg::pool(4).await;
        let (payment, c) = switchboard_testkit::pg::pool(4).await;
        let (shipping, d) = switchboard_testkit::pg::pool(4).await;
        let (email, e) = switchboard_testkit::pg::pool(4).await;
        let inbox: Arc<dyn InboxStore> = Arc::new(
            switchboard::layers::PostgresInbox::new(email, Duration::from_secs(86_400)).await.expect("inbox"),
        );
        (Databases { order, inventory, payment, shipping, inbox }, (a, b, c, d, e))
    },
    Broker::embedded().await
);
