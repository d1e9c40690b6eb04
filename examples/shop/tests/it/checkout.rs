//! Checkout end to end: order, inventory and payment (and the simulated provider) each with
//! their own database, talking over a durable embedded broker and HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use shop::catalog::Catalog;
use shop::inventory::{InventoryDatabase, InventoryService};
use shop::order::{OrderList, OrderService, ShopDatabase};
use shop::payment::provider::ProviderConfig;
use shop::payment::{PaymentDatabase, PaymentService};
use switchboard::projection::Projection;

/// Order, inventory and payment over one broker, each on its own database.
struct Shop<DB: ShopDatabase + InventoryDatabase + PaymentDatabase>
where
    OrderList: Projection<DB>,
{
    base: String,
    http: reqwest::Client,
    inventory_db: sqlx::Pool<DB>,
    payment_db: sqlx::Pool<DB>,
    order: OrderService<DB>,
    inventory: InventoryService,
    payment: PaymentService,
    _broker: tempfile::TempDir,
}

impl<DB: ShopDatabase + InventoryDatabase + PaymentDatabase> Shop<DB>
where
    OrderList: Projection<DB>,
{
    async fn start(
        order_db: sqlx::Pool<DB>,
        inventory_db: sqlx::Pool<DB>,
        payment_db: sqlx::Pool<DB>,
    ) -> Self {
        let broker = tempfile::tempdir().expect("tempdir");
        let bus =
            switchboard::Bus::connect(&format!("embedded:{}", broker.path().display())).await.expect("bus");
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
        let mut order = OrderService::start(order_db, bus, catalog).await.expect("order");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = order.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Shop {
            base,
            http: reqwest::Client::new(),
            inventory_db,
            payment_db,
            order,
            inventory,
            payment,
            _broker: broker,
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

    async fn shutdown(self) {
        self.order.shutdown().await;
        self.inventory.shutdown().await;
        self.payment.shutdown().await;
    }
}

macro_rules! checkout_cases {
    ($db:ident, $open:expr) => {
        mod $db {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_checkout_reserves_charges_and_confirms_and_a_failed_one_gives_everything_back() {
                let ((order_db, inventory_db, payment_db), _guard) = $open;
                let shop = Shop::start(order_db, inventory_db, payment_db).await;
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

                let short = shop.place("bo@example.com", &[("limited-print", 5), ("tea-sencha", 1)]).await;
                let order = shop.settled(&short).await;
                assert_eq!(
                    (order["status"].as_str(), order["cancel_reason"].as_str()),
                    (Some("canceled"), Some("out of stock"))
                );
                assert_eq!(shop.payment(&short).await, None, "nothing was charged");

                // What failed was given back: only the confirmed order holds stock.
                assert_eq!(shop.stock("kettle-gooseneck").await, (initial("kettle-gooseneck"), 0));
                assert_eq!(shop.stock("limited-print").await, (initial("limited-print"), 0));
                assert_eq!(shop.stock("tea-sencha").await, (initial("tea-sencha") - 1, 1));
                shop.shutdown().await;
            }
        }
    };
}

checkout_cases!(sqlite, {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join(name))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        sqlx::SqlitePool::connect_with(options)
    };
    let pools = (
        open("order.db").await.expect("db"),
        open("inventory.db").await.expect("db"),
        open("payment.db").await.expect("db"),
    );
    (pools, dir)
});

checkout_cases!(postgres, {
    switchboard_testkit::require_service!(Postgres);
    let (order, a) = switchboard_testkit::pg::pool(8).await;
    let (inventory, b) = switchboard_testkit::pg::pool(4).await;
    let (payment, c) = switchboard_testkit::pg::pool(4).await;
    ((order, inventory, payment), (a, b, c))
});
