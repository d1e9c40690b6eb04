//! Runs an example's test on every backend: the embedded broker in a temporary directory,
//! `switchboard serve` started in-process on a loopback port, and the RabbitMQ and NATS
//! JetStream servers of this machine (which `.ci/run` makes sure are running). A backend that
//! is not running is skipped, with a line on stderr, unless `CI` is set (then it fails).

pub use switchboard_testkit::unique;
use switchboard_testkit::{Service, TestServer};

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
    _server: Option<TestServer>,
}

impl Backend {
    /// Starts (or points at) the backend. Returns `None` when the environment variable
    /// `SWITCHBOARD_EXAMPLES_ONLY` names other backends (to run one backend by hand), or when
    /// RabbitMQ or NATS is not reachable outside CI (see `switchboard_testkit::require`).
    ///
    /// # Panics
    /// If the in-process server cannot start, or in CI if RabbitMQ or NATS is not reachable.
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
                let server = TestServer::start().await;
                Target { url: server.url(), _dir: None, _server: Some(server) }
            }
            Backend::Amqp => {
                switchboard_testkit::require(Service::RabbitMq)?;
                Target { url: switchboard_testkit::rabbitmq_url(), _dir: None, _server: None }
            }
            Backend::Nats => {
                switchboard_testkit::require(Service::Nats)?;
                Target { url: switchboard_testkit::nats_url(), _dir: None, _server: None }
            }
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
            let topic = switchboard_testkit::topic(topic);
            for sub in subscriptions {
                let sub = switchboard_testkit::sub(sub);
                backend.delete_subscription(&topic, &sub).await.expect("delete subscription");
            }
            backend.delete_topic(&topic).await.expect("delete topic");
        }
        bus.close().await.expect("close");
    }
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
