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

pub(crate) use switchboard_testkit::pg;
