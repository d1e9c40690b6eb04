//! A running order service on a real socket, over a durable embedded broker.

use shop::catalog::Catalog;
use shop::order::facts::Facts;
use shop::order::{OrderList, OrderService, ShopDatabase};
use switchboard::projection::Projection;

/// The order service serving its REST API on 127.0.0.1.
pub(crate) struct RunningOrders<DB: ShopDatabase>
where
    OrderList: Projection<DB>,
    Facts: Projection<DB>,
{
    pub(crate) base: String,
    pub(crate) service: OrderService<DB>,
    pub(crate) bus: switchboard::Bus,
    pub(crate) http: reqwest::Client,
    _broker: tempfile::TempDir,
}

impl<DB: ShopDatabase> RunningOrders<DB>
where
    OrderList: Projection<DB>,
    Facts: Projection<DB>,
{
    pub(crate) async fn start(pool: sqlx::Pool<DB>) -> Self {
        let broker = tempfile::tempdir().expect("tempdir");
        let bus =
            switchboard::Bus::connect(&format!("embedded:{}", broker.path().display())).await.expect("bus");
        let mut service =
            OrderService::start(pool, bus.clone(), Catalog::reference(), None).await.expect("order service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = service.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        RunningOrders { base, service, bus, http: reqwest::Client::new(), _broker: broker }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub(crate) async fn sqlite(dir: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("order.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(10));
    sqlx::SqlitePool::connect_with(options).await.expect("sqlite")
}
