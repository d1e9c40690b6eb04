//! Checkout end to end: order, inventory and payment (and the simulated provider) each with
//! their own database, talking over a durable embedded broker and HTTP.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shop::catalog::Catalog;
use shop::deployment::{AnyShopDatabase, Databases, Shop, ShopConfig};
use shop::invariants::Books;
use shop::order::OrderList;
use shop::order::facts::Facts;
use shop::shipping::ShippingRequests;
use switchboard::layers::InboxStore;
use switchboard::projection::Projection;

/// The shop in this process, with what the tests read of it.
struct TestShop<DB: AnyShopDatabase>
where
    OrderList: Projection<DB>,
    Facts: Projection<DB>,
    ShippingRequests<DB>: Projection<DB>,
{
    shop: Shop<DB>,
    base: String,
    http: reqwest::Client,
    _maildir: tempfile::TempDir,
}

impl<DB: AnyShopDatabase> TestShop<DB>
where
    OrderList: Projection<DB>,
    Facts: Projection<DB>,
    ShippingRequests<DB>: Projection<DB>,
{
    /// All five services, email with `email_instances` competing instances, shipping only
    /// when `with_shipping`.
    async fn start(
        dbs: Databases<DB>,
        bus: switchboard::Bus,
        email_instances: usize,
        with_shipping: bool,
    ) -> Self {
        let maildir = tempfile::tempdir().expect("maildir");
        let mut config = ShopConfig::ephemeral(maildir.path().to_owned());
        config.email_instances = email_instances;
        config.shipping = with_shipping;
        let shop = Shop::start(dbs, bus, config).await.expect("shop");
        TestShop { base: shop.storefront.clone(), shop, http: reqwest::Client::new(), _maildir: maildir }
    }

    fn books(&self) -> Books<DB> {
        Books {
            order: self.shop.order.store.pool().clone(),
            inventory: self.shop.inventory_db.clone(),
            payment: self.shop.payment_db.clone(),
            shipping: self.shop.shipping_db.clone(),
            maildir: self.shop.maildir.clone(),
            catalog: Catalog::reference(),
        }
    }

    /// Runs `query` until `done` holds for its answer (the read model catches up
    /// asynchronously), for up to 30 s; the last answer.
    async fn read_until(&self, query: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.graphql(query).await;
            if done(&answer) || tokio::time::Instant::now() > deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a GraphQL query on the read model.
    async fn graphql(&self, query: &str) -> Value {
        self.http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json")
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

    /// On hand, reserved, sold, once they are `expected` (inventory sells a confirmed
    /// order's reservation when it reads the confirmation on the log), or after 30 s.
    async fn stock(&self, sku: &str, expected: (i64, i64, i64)) -> (i64, i64, i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stock = DB::stock(&self.shop.inventory_db, sku).await.expect("stock").expect("product");
            let now = (stock.on_hand, stock.reserved, stock.sold);
            if now == expected || tokio::time::Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn payment(&self, order: &str) -> Option<String> {
        DB::payment(&self.shop.payment_db, order).await.expect("payment").map(|p| p.state)
    }

    /// The emails written about `order`, waiting up to 30 s for `count` of them.
    async fn emails_about(&self, order: &str, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let about: Vec<String> = shop::email::sent(&self.shop.maildir)
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
        let shipping = self.shop.shipping().expect("shipping runs");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while shipping.applied() < events {
            assert!(
                tokio::time::Instant::now() < deadline,
                "shipping applied only {} events",
                shipping.applied()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        DB::shipping_requests(&self.shop.shipping_db).await
    }

    async fn start_emails(&mut self, instances: usize) {
        self.shop.start_emails(instances).await.expect("email");
    }

    async fn start_shipping(&mut self) {
        self.shop.start_shipping().await.expect("shipping");
    }

    async fn emails_written(&self) -> usize {
        shop::email::sent(&self.shop.maildir).expect("maildir").len()
    }

    async fn shutdown(self) {
        self.shop.shutdown().await;
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
                let shop = TestShop::start(dbs, bus, 2, true).await;
                let catalog = Catalog::reference();
                let initial = |sku: &str| catalog.get(sku).expect("product").initial_stock;

                let happy =
                    shop.place("ada@example.com", &[("teapot-cast-iron", 2), ("tea-sencha", 1)]).await;
                let order = shop.settled(&happy).await;
                assert_eq!(order["status"], "confirmed", "{order}");
                let expected = (initial("teapot-cast-iron") - 2, 0, 2);
                assert_eq!(shop.stock("teapot-cast-iron", expected).await, expected, "sold once confirmed");
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
                let head = shop.shop.order.store.head().await.expect("head");
                let body = json!({"customer": "bo@example.com", "lines": [{"sku": "limited-print", "quantity": 5}]});
                let refused = shop.http.post(format!("{}/orders", shop.base)).json(&body).send().await.expect("post");
                assert_eq!(refused.status().as_u16(), 409);
                let problem: Value = refused.json().await.expect("problem");
                assert!(problem["type"].as_str().expect("type").ends_with("out-of-stock"), "{problem}");
                assert!(problem["detail"].as_str().expect("detail").contains("limited-print: 5 requested, 3 in stock"), "{problem}");
                assert_eq!(shop.shop.order.store.head().await.expect("head"), head, "a refused order writes nothing");

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
                let expected = (initial("kettle-gooseneck"), 0, 0);
                assert_eq!(shop.stock("kettle-gooseneck", expected).await, expected);
                let expected = (initial("limited-print") - 2, 0, 2);
                assert_eq!(shop.stock("limited-print", expected).await, expected);
                let expected = (initial("tea-sencha") - 1, 0, 1);
                assert_eq!(shop.stock("tea-sencha", expected).await, expected);

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

                // The GraphQL read model shows all of it, from the facts the services published.
                let query = format!(
                    r#"{{ order(id: "{happy}") {{ status totalCents lines {{ sku quantity unitPriceCents }}
                        payment {{ state amountCents chargeId }} shipment {{ state requestedAt }}
                        emails {{ kind to subject }} }} }}"#
                );
                let read = shop.read_until(&query, |v| {
                    v["data"]["order"]["shipment"]["state"] == "requested" && v["data"]["order"]["emails"].as_array().is_some_and(|e| e.len() == 1)
                }).await;
                let order = &read["data"]["order"];
                assert_eq!(order["status"], "CONFIRMED", "{read}");
                assert_eq!(order["totalCents"], 2 * 4_900 + 890, "{read}");
                assert_eq!(order["lines"][0], json!({"sku": "teapot-cast-iron", "quantity": 2, "unitPriceCents": 4_900}));
                assert_eq!(order["payment"]["state"], "charged", "{read}");
                assert_eq!(order["payment"]["amountCents"], 2 * 4_900 + 890, "{read}");
                assert_eq!(order["emails"][0]["kind"], "confirmed", "{read}");
                assert_eq!(order["emails"][0]["to"], "ada@example.com", "{read}");
                let query = format!(r#"{{ order(id: "{declined}") {{ status cancelReason payment {{ state }} shipment {{ state }} emails {{ kind }} }} }}"#);
                let read = shop.read_until(&query, |v| v["data"]["order"]["emails"].as_array().is_some_and(|e| e.len() == 1)).await;
                let order = &read["data"]["order"];
                assert_eq!((order["status"].as_str(), order["cancelReason"].as_str()), (Some("CANCELED"), Some("payment declined")), "{read}");
                assert_eq!(order["payment"]["state"], "declined", "{read}");
                assert_eq!(order["shipment"], Value::Null, "never shipped: {read}");
                assert_eq!(order["emails"][0]["kind"], "canceled", "{read}");

                // Filters and pages: two confirmed orders, one per page.
                let page = shop.graphql("{ orders(status: CONFIRMED, first: 1) { nodes { id } pageInfo { hasNextPage endCursor } } }").await;
                let first = page["data"]["orders"]["nodes"][0]["id"].as_str().expect("an order").to_owned();
                let cursor = page["data"]["orders"]["pageInfo"]["endCursor"].as_str().expect("cursor").to_owned();
                assert_eq!(page["data"]["orders"]["pageInfo"]["hasNextPage"], true);
                let next = shop.graphql(&format!(r#"{{ orders(status: CONFIRMED, first: 1, after: "{cursor}") {{ nodes {{ id }} }} }}"#)).await;
                let second = next["data"]["orders"]["nodes"][0]["id"].as_str().expect("an order").to_owned();
                let mut confirmed = vec![first, second];
                confirmed.sort();
                assert_eq!(confirmed, shipped, "the confirmed orders, each once across the pages");
                let mine = shop.graphql(r#"{ orders(customer: "ada@example.com") { nodes { id } } }"#).await;
                assert_eq!(mine["data"]["orders"]["nodes"], json!([{"id": happy}]));

                // And the books balance.
                let balance = shop.books().settle(Duration::from_secs(30)).await.expect("books");
                assert!(balance.balanced(), "{balance:?}");
                assert_eq!((balance.orders, balance.confirmed, balance.canceled), (4, 2, 2));
                shop.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn with_email_down_no_order_is_lost_and_a_late_shipping_service_replays_the_log() {
                const ORDERS: usize = 200;
                let (dbs, _guard) = $open;
                let (bus, _broker) = $broker;
                let mut shop = TestShop::start(dbs, bus, 0, false).await;
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
                let emails = shop::email::sent(&shop.shop.maildir).expect("maildir");
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
pub(crate) async fn sqlite_databases() -> (Databases<sqlx::Sqlite>, tempfile::TempDir) {
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
