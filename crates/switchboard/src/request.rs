//! Request/reply over messaging: [`Bus::request`](crate::Bus::request) publishes a request
//! that names where to answer, and waits for the answer with the same correlation id.
//!
//! Each bus (all its clones) owns one reply topic, `replies.<random>`, opened on its first
//! request with one subscription that every reply to this client arrives on; replies are
//! matched to the waiting requests by the `correlationid` extension (the request's id). A
//! reply that comes after its request gave up, or that names no request of this client, is
//! acked and dropped (with a debug log and a counter): the requester already reported a
//! timeout. The topic is deleted by [`Bus::close`](crate::Bus::close), or when the last
//! clone of the bus is dropped inside a runtime; a client that is killed leaves it behind.
//!
//! A responder answers with [`reply_to`] (or [`Incoming::reply`](crate::Incoming::reply) in
//! a router handler), which addresses the answer from the request's `replyto` and
//! `correlationid`.
//!
//! ```
//! # async fn run() -> Result<(), switchboard::BusError> {
//! use std::time::Duration;
//! use switchboard::request::reply_to;
//! use switchboard::{Bus, Message, SubscriptionName, SubscriptionSpec, TopicName};
//!
//! let bus = Bus::connect("embedded:").await?;
//! let prices = TopicName::from_static("request-doc-prices");
//! let mut requests = bus.subscribe(&prices, SubscriptionSpec::queue(SubscriptionName::from_static("pricing"))).await?;
//! let responder = bus.clone();
//! tokio::spawn(async move {
//!     while let Some(Ok(request)) = requests.next().await {
//!         let answer = Message::new("/pricing", "price.quoted", "42");
//!         if let Ok((to, reply)) = reply_to(request.message(), answer) {
//!             responder.publish(&to, reply).await.ok();
//!         }
//!         request.ack().await.ok();
//!     }
//! });
//!
//! let reply = bus.request(&prices, Message::new("/shop", "price.requested", "sku-1"), Duration::from_secs(5)).await?;
//! assert_eq!(reply.data, "42".as_bytes());
//! // `bus.close()` deletes the reply topic (not called here: this broker is the process's).
//! # Ok(()) }
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use switchboard_core::backend::Backend;
use switchboard_core::contract::{BusError, Capability, Start, SubscriptionSpec};
use switchboard_core::{Message, SubscriptionName, TopicName};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The extension that names the topic a reply goes to.
pub const REPLY_TO: &str = "replyto";
/// The extension that carries the id of the request a reply answers.
pub const CORRELATION_ID: &str = "correlationid";

/// Addresses `reply` as the answer to `request`: the topic its `replyto` names, and its
/// `correlationid` (the request's id when it carries none).
///
/// # Errors
/// [`BusError::InvalidArgument`] when `request` names no reply topic, or an invalid one.
pub fn reply_to(request: &Message, mut reply: Message) -> Result<(TopicName, Message), BusError> {
    let to = request.extensions.get(REPLY_TO).ok_or_else(|| {
        BusError::InvalidArgument(format!("message {} asks for no reply (no `{REPLY_TO}`)", request.id))
    })?;
    let topic = TopicName::new(to.as_str()).map_err(|e| {
        BusError::InvalidArgument(format!("message {}'s `{REPLY_TO}` is not a topic: {e}", request.id))
    })?;
    let correlation = request.extensions.get(CORRELATION_ID).cloned().unwrap_or_else(|| request.id.clone());
    reply.extensions.insert(CORRELATION_ID.to_owned(), correlation);
    Ok((topic, reply))
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Message>>>>;

/// One client's reply topic, its subscription's reader, and the requests waiting on it.
pub(crate) struct Replies {
    topic: TopicName,
    waiting: Waiting,
    reader: JoinHandle<()>,
    backend: Arc<dyn Backend>,
}

impl Replies {
    /// Creates the reply topic and starts reading it.
    pub(crate) async fn open(backend: Arc<dyn Backend>) -> Result<Replies, BusError> {
        let suffix = switchboard_core::new_message_id().replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let topic = TopicName::new(format!("replies.{suffix}"))?;
        let name = SubscriptionName::from_static(SUBSCRIPTION);
        let caps = backend.capabilities();
        let spec = if caps.contains(Capability::Queue) {
            SubscriptionSpec::queue(name)
        } else {
            SubscriptionSpec::stream(name)
        }
        .with_start(Start::Latest);
        let mut subscription = backend.subscribe(&topic, spec).await?;
        let waiting: Waiting = Arc::default();
        let reader = tokio::spawn({
            let waiting = waiting.clone();
            let topic = topic.clone();
            async move {
                while let Some(delivery) = subscription.next().await {
                    let delivery = match delivery {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::debug!(topic = %topic, error = %e, "A reply could not be read.");
                            continue;
                        }
                    };
                    let reply = delivery.message().clone();
                    let waiter =
                        reply.extensions.get(CORRELATION_ID).and_then(|id| waiting.lock().remove(id));
                    match waiter {
                        Some(waiter) => {
                            let _ = waiter.send(reply);
                        }
                        None => {
                            tracing::debug!(topic = %topic, id = %reply.id, "Dropped a reply no request waits for (late or unknown).");
                            metrics::counter!("switchboard_replies_unmatched_total").increment(1);
                        }
                    }
                    if let Err(e) = delivery.ack().await {
                        tracing::debug!(topic = %topic, error = %e, "Could not ack a reply.");
                    }
                }
            }
        });
        Ok(Replies { topic, waiting, reader, backend })
    }

    pub(crate) fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// Registers a request before it is published, so its reply cannot arrive unseen.
    pub(crate) fn expect(&self, correlation: String) -> oneshot::Receiver<Message> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(correlation, tx);
        rx
    }

    pub(crate) fn forget(&self, correlation: &str) {
        self.waiting.lock().remove(correlation);
    }

    /// Stops reading and deletes the reply subscription and topic.
    pub(crate) async fn close(&self) -> Result<(), BusError> {
        self.reader.abort();
        self.waiting.lock().clear();
        delete(&self.backend, &self.topic).await
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.reader.abort();
        // The last clone of a bus that was not closed: delete the topic if a runtime is
        // there to do it (best effort; `Bus::close` is the sure way).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (backend, topic) = (self.backend.clone(), self.topic.clone());
            runtime.spawn(async move {
                let _ = delete(&backend, &topic).await;
            });
        }
    }
}

/// Deletes the subscription first: on backends where a subscription outlives its topic
/// (RabbitMQ's queues), deleting the topic alone would leave it behind.
async fn delete(backend: &Arc<dyn Backend>, topic: &TopicName) -> Result<(), BusError> {
    match backend.delete_subscription(topic, &SubscriptionName::from_static(SUBSCRIPTION)).await {
        Ok(()) | Err(BusError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    match backend.delete_topic(topic).await {
        Ok(()) | Err(BusError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The reply topic's one subscription.
const SUBSCRIPTION: &str = "client";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_addressed_from_the_request() {
        let request = Message::new("/a", "ping", "x")
            .with_extension(REPLY_TO, "replies.abc")
            .with_extension(CORRELATION_ID, "req-1");
        let (topic, reply) = reply_to(&request, Message::new("/b", "pong", "y")).expect("addressed");
        assert_eq!(topic.as_str(), "replies.abc");
        assert_eq!(reply.extensions.get(CORRELATION_ID).map(String::as_str), Some("req-1"));

        let plain = Message::new("/a", "ping", "x");
        assert!(matches!(
            reply_to(&plain, Message::new("/b", "pong", "y")),
            Err(BusError::InvalidArgument(_))
        ));
        let bad = Message::new("/a", "ping", "x").with_extension(REPLY_TO, "not a topic");
        assert!(matches!(reply_to(&bad, Message::new("/b", "pong", "y")), Err(BusError::InvalidArgument(_))));
    }
}
