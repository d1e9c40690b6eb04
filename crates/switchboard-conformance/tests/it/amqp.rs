//! RabbitMQ at 127.0.0.1:5672 (guest/guest), which `.ci/run` makes sure is running. Every
//! case uses its own topic names, so the cases share the one broker. The harness does not
//! restart RabbitMQ: that would cut every case running in parallel; the backend's own tests
//! cut its connections through a proxy instead.

use std::sync::Arc;

use switchboard_amqp::AmqpBackend;
use switchboard_conformance::Harness;
use switchboard_core::contract::Backend;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct AmqpHarness;

pub(crate) async fn harness() -> Arc<dyn Harness> {
    Arc::new(AmqpHarness)
}

#[async_trait::async_trait]
impl Harness for AmqpHarness {
    fn name(&self) -> &str {
        "amqp"
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        Ok(Arc::new(AmqpBackend::connect(URL).await?))
    }
}

switchboard_conformance::conformance_tests!(harness);
