//! Publishing and creating topics.
//!
//! A publish's batch travels in one `Publish` call, so the server stores it atomically per
//! partition and in order; concurrent publishes to one topic share that call
//! ([`crate::coalesce`]). Topics are created on first use (once per topic
//! and backend, remembered in a cache), as the contract asks.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use switchboard_core::contract::{BusError, PublishOptions, TopicSpec};
use switchboard_core::{Message, TopicName};
use switchboard_proto::switchboard::v1 as api;
use tokio::sync::RwLock;
use tonic::Code;

use crate::coalesce::Coalescer;
use crate::connection::Shared;
use crate::convert;
use crate::error::from_status;

/// Topics this backend has created or found, so publishes skip the `CreateTopic` call.
#[derive(Default)]
pub(crate) struct Topics {
    ensured: Mutex<HashSet<TopicName>>,
}

impl Topics {
    /// Creates `topic` with `spec` unless it exists.
    ///
    /// # Errors
    /// As [`from_status`]; an existing topic (with any settings) is not an error.
    pub(crate) async fn ensure(
        &self,
        shared: &Shared,
        topic: &TopicName,
        spec: &TopicSpec,
    ) -> Result<(), BusError> {
        if spec.partitions == 0 {
            return Err(BusError::InvalidArgument("a topic needs at least one partition".into()));
        }
        let config = api::TopicConfig { partitions: Some(spec.partitions), ..api::TopicConfig::default() };
        let request = api::CreateTopicRequest { name: topic.to_string(), config: Some(config) };
        match shared.client().create_topic(request).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(from_status(s, &shared.endpoint)),
        }
        self.ensured.lock().insert(topic.clone());
        Ok(())
    }

    /// Makes sure `topic` exists before it is used, once per topic. A token without `admin`
    /// may not create topics: then the topic is assumed to exist, and the call that follows
    /// reports NOT_FOUND if it does not.
    pub(crate) async fn ensure_default(&self, shared: &Shared, topic: &TopicName) -> Result<(), BusError> {
        if self.ensured.lock().contains(topic) {
            return Ok(());
        }
        match self.ensure(shared, topic, &TopicSpec::default()).await {
            Err(BusError::Backend { retryable: false, .. }) => {
                self.ensured.lock().insert(topic.clone());
                Ok(())
            }
            other => other,
        }
    }

    /// Forgets a topic, so the next use creates it again (after NOT_FOUND: it was deleted).
    pub(crate) fn forget(&self, topic: &TopicName) {
        self.ensured.lock().remove(topic);
    }
}

/// Publishes in flight, so [`flush`] can wait for them: each publish holds a read guard for
/// its duration and `flush` takes the write guard once.
#[derive(Default)]
pub(crate) struct InFlight(RwLock<()>);

impl InFlight {
    /// Waits for every publish started before the call.
    pub(crate) async fn flush(&self) {
        drop(self.0.write().await);
    }
}

/// Publishes `messages` to `topic` as one batch.
///
/// # Errors
/// [`BusError::InvalidMessage`] before anything is sent; otherwise as [`from_status`].
pub(crate) async fn publish(
    shared: &Arc<Shared>,
    topics: &Topics,
    in_flight: &InFlight,
    coalescer: &Coalescer,
    topic: &TopicName,
    messages: Vec<Message>,
    options: &PublishOptions,
) -> Result<(), BusError> {
    shared.check_open()?;
    if messages.is_empty() {
        return Ok(());
    }
    // The server checks the size against its own limit; everything else is checked here, so
    // a bad message fails with the contract's error before anything is sent.
    for m in &messages {
        m.validate(usize::MAX)?;
    }
    let _guard = in_flight.0.read().await;
    topics.ensure_default(shared, topic).await?;
    let events = messages.into_iter().map(convert::event_from_message).collect();
    let deliver_at = options.deliver_at.map(|t| t.0);
    match coalescer.publish(shared, topic, deliver_at, events).await {
        Ok(_) => Ok(()),
        Err(s) => {
            if s.code() == Code::NotFound {
                topics.forget(topic);
            }
            Err(from_status(s, &shared.endpoint))
        }
    }
}
