//! `switchboard serve` published to through the SDK's `switchboard://` backend: what a
//! service written on the SDK gets, next to the bench's own client on the same server.
//!
//! Every send is a `publish` call of its own on a task of its own, as concurrent request
//! handlers of a service make them; the backend shares one call in flight per topic among
//! them. Consumers are the bench's own, so only the publish path differs from
//! `switchboard-serve`.

use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use bytes::Bytes;
use switchboard_core::backend::Publisher as _;
use switchboard_core::contract::PublishOptions;
use switchboard_core::{Message, TopicName};
use switchboard_remote::RemoteBackend;

use super::{Confirm, Consumer, Durability, Publisher, Shape, Target, within};

/// The SDK's publish path in front of a [`super::serve::Serve`] target with fsync on.
pub(crate) struct Sdk {
    serve: Box<dyn Target>,
    backend: Arc<RemoteBackend>,
}

impl Sdk {
    pub(crate) async fn connect(
        serve: Box<dyn Target>,
        grpc: std::net::SocketAddr,
    ) -> Result<Box<dyn Target>> {
        let url = format!("switchboard://{grpc}");
        let backend = within("connecting the SDK's switchboard:// backend", async {
            Ok(RemoteBackend::connect(&url).await?)
        })
        .await?;
        Ok(Box::new(Sdk { serve, backend: Arc::new(backend) }))
    }
}

#[async_trait]
impl Target for Sdk {
    fn name(&self) -> &str {
        "switchboard-sdk"
    }

    fn durability(&self) -> Durability {
        self.serve.durability()
    }

    fn setup(&self) -> String {
        "switchboard serve as above; each send a concurrent publish of the SDK's switchboard:// backend (one call in flight per topic, carrying the publishes queued meanwhile); the bench's consumers".into()
    }

    fn supports(&self, shape: Shape) -> bool {
        self.serve.supports(shape)
    }

    async fn create(&self, topic: &str, shape: Shape) -> Result<()> {
        self.serve.create(topic, shape).await
    }

    async fn publisher(&self, topic: &str) -> Result<Box<dyn Publisher>> {
        Ok(Box::new(SdkPublisher { backend: self.backend.clone(), topic: TopicName::new(topic)? }))
    }

    async fn consumer(&self, topic: &str, subscription: usize, prefetch: u32) -> Result<Box<dyn Consumer>> {
        self.serve.consumer(topic, subscription, prefetch).await
    }

    async fn reader(&self, topic: &str) -> Result<Box<dyn Consumer>> {
        self.serve.reader(topic).await
    }

    async fn delete(&self, topic: &str, shape: Shape) -> Result<()> {
        self.serve.delete(topic, shape).await
    }

    async fn stages(&self) -> Result<Option<Vec<switchboard_broker::StageSnapshot>>> {
        self.serve.stages().await
    }

    fn server_pid(&self) -> Option<u32> {
        self.serve.server_pid()
    }
}

struct SdkPublisher {
    backend: Arc<RemoteBackend>,
    topic: TopicName,
}

#[async_trait]
impl Publisher for SdkPublisher {
    async fn send(&mut self, payload: Bytes) -> Result<Confirm> {
        let (backend, topic) = (self.backend.clone(), self.topic.clone());
        let message = Message::new("/bench", "bench", payload);
        let publish =
            tokio::spawn(
                async move { backend.publish(&topic, vec![message], &PublishOptions::default()).await },
            );
        Ok(Box::pin(async move { Ok(publish.await??) }))
    }
}
