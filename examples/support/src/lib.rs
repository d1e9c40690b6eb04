//! Runs an example's test on every backend: the embedded broker in a temporary directory,
//! `switchboard serve` started in-process on a loopback port, and the RabbitMQ and NATS
//! JetStream servers of this machine (which `.ci/run` makes sure are running).

/// A backend an example can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `embedded:<temporary directory>`.
    Embedded,
    /// `switchboard://` to a server started for the test.
    Remote,
    /// RabbitMQ at 127.0.0.1:5672.
    Amqp,
    /// NATS JetStream at 127.0.0.1:4222.
    Nats,
}

/// A running backend: its URL, and what keeps it alive until the test ends.
pub struct Target {
    /// What to pass to `Bus::connect`.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    _server: Option<switchboard_server::Server>,
}

impl Backend {
    /// Starts (or points at) the backend. Returns `None` only when the environment variable
    /// `SWITCHBOARD_EXAMPLES_ONLY` names other backends (to run one backend by hand).
    ///
    /// # Panics
    /// If the in-process server cannot start.
    pub async fn start(self) -> Option<Target> {
        if let Ok(only) = std::env::var("SWITCHBOARD_EXAMPLES_ONLY")
            && !only.split(',').any(|b| b.trim() == self.name())
        {
            eprintln!("skipping {}: SWITCHBOARD_EXAMPLES_ONLY={only}", self.name());
            return None;
        }
        Some(match self {
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("temporary directory");
                Target { url: format!("embedded:{}", dir.path().display()), _dir: Some(dir), _server: None }
            }
            Backend::Remote => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let config = switchboard_server::ServerConfig {
                    data_dir: dir.path().to_owned(),
                    http_addr: "127.0.0.1:0".parse().expect("address"),
                    grpc_addr: "127.0.0.1:0".parse().expect("address"),
                    ..switchboard_server::ServerConfig::default()
                };
                let server = switchboard_server::Server::start(config).await.expect("server starts");
                Target {
                    url: format!("switchboard://{}", server.grpc_addr()),
                    _dir: Some(dir),
                    _server: Some(server),
                }
            }
            Backend::Amqp => {
                Target { url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(), _dir: None, _server: None }
            }
            Backend::Nats => Target { url: "nats://127.0.0.1:4222".into(), _dir: None, _server: None },
        })
    }

    /// The backend's short name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Remote => "remote",
            Backend::Amqp => "amqp",
            Backend::Nats => "nats",
        }
    }
}

impl Target {
    /// Deletes `topics` and their `subscriptions` (on brokers that outlive the test run).
    ///
    /// # Panics
    /// If the backend cannot be reached or refuses.
    pub async fn clean_up(&self, topics: &[&str], subscriptions: &[&str]) {
        let bus = switchboard::Bus::connect(&self.url).await.expect("connect for clean-up");
        let backend = bus.backend();
        for topic in topics {
            let topic = switchboard::TopicName::new(*topic).expect("topic name");
            for sub in subscriptions {
                let sub = switchboard::SubscriptionName::new(*sub).expect("subscription name");
                backend.delete_subscription(&topic, &sub).await.expect("delete subscription");
            }
            backend.delete_topic(&topic).await.expect("delete topic");
        }
        bus.close().await.expect("close");
    }
}

/// A name no other test run has used (RabbitMQ and NATS keep topics between runs).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Expands to one test per backend calling `$case(Backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$case($crate::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remote() {
                super::$case($crate::Backend::Remote).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp() {
                super::$case($crate::Backend::Amqp).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$case($crate::Backend::Nats).await
            }
        }
    };
}
