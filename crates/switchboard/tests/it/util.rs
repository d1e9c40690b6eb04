/// A fresh durable embedded bus in its own directory.
pub(crate) async fn bus() -> (switchboard::Bus, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus =
        switchboard::Bus::connect(&format!("embedded:{}", dir.path().display())).await.expect("connect");
    (bus, dir)
}

/// A backend wrapper that records every publish call and fails on demand: the outbox tests
/// count publishes (the embedded broker's dedup would hide a second one) and inject broker
/// failures without stopping a broker.
/// A pool on a SQLite file in WAL mode, waiting up to 10 s for the write lock, as a
/// service would open its database.
pub(crate) async fn sqlite_file(file: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(10));
    sqlx::SqlitePool::connect_with(options).await.expect("sqlite")
}

pub(crate) mod recording {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use switchboard::backend::{Backend, Publisher, Subscriber};
    use switchboard::{
        BusError, Capabilities, Message, PublishOptions, Subscription, SubscriptionName, SubscriptionSpec,
        SubscriptionStats, TopicName, TopicSpec,
    };

    #[derive(Default)]
    struct State {
        published: Vec<(String, Message)>,
        transient_failures: u32,
        refused_topics: Vec<String>,
    }

    /// Wraps `inner`; see the module doc.
    pub(crate) struct Recording {
        inner: Arc<dyn Backend>,
        state: Mutex<State>,
    }

    impl Recording {
        pub(crate) fn new(inner: Arc<dyn Backend>) -> Arc<Recording> {
            Arc::new(Recording { inner, state: Mutex::default() })
        }

        /// Every message a publish call carried that the broker accepted, in call order.
        pub(crate) fn published(&self) -> Vec<(String, Message)> {
            self.state.lock().published.clone()
        }

        /// The next `n` publish calls fail as an unreachable broker.
        pub(crate) fn fail_next(&self, n: u32) {
            self.state.lock().transient_failures = n;
        }

        /// Publishes to `topic` fail as a topic that does not exist.
        pub(crate) fn refuse(&self, topic: &str, refused: bool) {
            let mut state = self.state.lock();
            state.refused_topics.retain(|t| t != topic);
            if refused {
                state.refused_topics.push(topic.to_owned());
            }
        }
    }

    #[async_trait::async_trait]
    impl Publisher for Recording {
        async fn publish(
            &self,
            topic: &TopicName,
            messages: Vec<Message>,
            options: &PublishOptions,
        ) -> Result<(), BusError> {
            {
                let mut state = self.state.lock();
                if state.transient_failures > 0 {
                    state.transient_failures -= 1;
                    return Err(BusError::Unreachable {
                        backend: "recording",
                        endpoint: "injected".into(),
                        source: "an injected failure".into(),
                    });
                }
                if state.refused_topics.iter().any(|t| t == topic.as_str()) {
                    return Err(BusError::topic_not_found(topic));
                }
            }
            self.inner.publish(topic, messages.clone(), options).await?;
            self.state.lock().published.extend(messages.into_iter().map(|m| (topic.as_str().to_owned(), m)));
            Ok(())
        }

        async fn flush(&self) -> Result<(), BusError> {
            self.inner.flush().await
        }
    }

    #[async_trait::async_trait]
    impl Subscriber for Recording {
        async fn subscribe(
            &self,
            topic: &TopicName,
            spec: SubscriptionSpec,
        ) -> Result<Subscription, BusError> {
            self.inner.subscribe(topic, spec).await
        }

        async fn stats(
            &self,
            topic: &TopicName,
            subscription: &SubscriptionName,
        ) -> Result<SubscriptionStats, BusError> {
            self.inner.stats(topic, subscription).await
        }
    }

    #[async_trait::async_trait]
    impl Backend for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }

        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }

        async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
            self.inner.ensure_topic(topic, spec).await
        }

        async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
            self.inner.delete_topic(topic).await
        }

        async fn delete_subscription(
            &self,
            topic: &TopicName,
            subscription: &SubscriptionName,
        ) -> Result<(), BusError> {
            self.inner.delete_subscription(topic, subscription).await
        }

        async fn close(&self) -> Result<(), BusError> {
            self.inner.close().await
        }
    }
}

/// A PostgreSQL pool on a schema of its own (dropped by the guard), so tests that share the
/// machine's `test` database never see each other's tables.
pub(crate) mod pg {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    pub(crate) struct Schema {
        pub(crate) name: String,
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
                    if let Ok(mut conn) =
                        sqlx::PgConnection::connect(&switchboard_testkit::postgres_url()).await
                    {
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
    pub(crate) async fn pool(size: u32) -> (sqlx::PgPool, Schema) {
        let url = switchboard_testkit::postgres_url();
        let admin = sqlx::PgPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} (database test, trust auth): {e}"));
        let name = format!("t_{}", switchboard_testkit::unique("s").replace('-', "_").to_lowercase());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .expect("schema");
        admin.close().await;
        (pool_on(&name, size).await, Schema { name })
    }

    /// A pool of `size` connections on the existing schema `name`.
    pub(crate) async fn pool_on(name: &str, size: u32) -> sqlx::PgPool {
        let options: PgConnectOptions = switchboard_testkit::postgres_url().parse().expect("url");
        // Named after the schema, so the guard can find them.
        let options = options.options([("search_path", name)]).application_name(name);
        PgPoolOptions::new().max_connections(size).connect_with(options).await.expect("pool")
    }
}
