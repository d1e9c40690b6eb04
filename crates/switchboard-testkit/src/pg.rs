//! A PostgreSQL pool on a schema of its own (dropped by the guard), so tests that share the
//! machine's `test` database never see each other's tables.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The schema of one test; dropped (its connections ended first) when this is.
pub struct Schema {
    /// Its name (also the `application_name` of its connections).
    pub name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // The test's own connections may still hold the schema's tables (a dropped
        // transaction is rolled back only when its connection is next used, and the
        // test's runtime is the one this drop blocks): end them first.
        let kick = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}' AND pid <> pg_backend_pid()",
            self.name
        );
        // Best effort, on a connection and runtime of its own: the test's runtime may be
        // the thread this drop blocks, and its connections are tied to it.
        std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&crate::postgres_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(kick)).execute(&mut conn).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            });
        })
        .join()
        .ok();
    }
}

/// A pool of `size` connections whose `search_path` is a fresh schema.
pub async fn pool(size: u32) -> (sqlx::PgPool, Schema) {
    let url = crate::postgres_url();
    let admin = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (database test, trust auth): {e}"));
    let name = format!("t_{}", crate::unique("s").replace('-', "_").to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&admin).await.expect("schema");
    admin.close().await;
    (pool_on(&name, size).await, Schema { name })
}

/// A pool of `size` connections on the existing schema `name`.
pub async fn pool_on(name: &str, size: u32) -> sqlx::PgPool {
    let options: PgConnectOptions = crate::postgres_url().parse().expect("url");
    // Named after the schema, so the guard can find them.
    let options = options.options([("search_path", name)]).application_name(name);
    PgPoolOptions::new().max_connections(size).connect_with(options).await.expect("pool")
}
