//! The suite can fail: the embedded backend wrapped with one injected bug at a time, and the
//! cases that must catch that bug run against it and must fail.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use libtest_mimic::Trial;
use switchboard_conformance::{Harness, Timing, async_trial};
use switchboard_core::backend::{self, Backend, DeliverySource, Publisher, Settle, Subscriber};
use switchboard_core::contract::{
    BusError, Capabilities, Capability, Delivery, Nack, PublishOptions, Settled, Subscription,
    SubscriptionSpec, SubscriptionStats, TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, TopicName, new_message_id};
use tokio::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Deliveries lose their `tracestate` extension.
    DropTraceState,
    /// A nack acknowledges instead.
    NackIsAck,
    /// The broker is asked for twice the prefetch the member wants.
    DoublePrefetch,
    /// Every publish gets fresh message ids (dedup cannot work).
    NewIdOnPublish,
    /// Claims no delayed delivery but publishes with `deliver_at` silently.
    IgnoresUnsupported,
    /// A publish to `a.b` is also published to `a`.
    LeakToParentTopic,
    /// Every delivery says attempt 1.
    AttemptAlwaysOne,
}

struct FaultyHarness {
    inner: Arc<dyn Harness>,
    fault: Fault,
}

#[async_trait::async_trait]
impl Harness for FaultyHarness {
    fn name(&self) -> &str {
        "faulty"
    }

    /// A caught fault often shows as a missing delivery: don't wait long for it.
    fn timing(&self) -> Timing {
        Timing { wait: Duration::from_secs(3), ..Timing::default() }
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Backend>> {
        Ok(Arc::new(FaultyBackend { inner: self.inner.connect().await?, fault: self.fault }))
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

struct FaultyBackend {
    inner: Arc<dyn Backend>,
    fault: Fault,
}

#[async_trait::async_trait]
impl Publisher for FaultyBackend {
    async fn publish(
        &self,
        topic: &TopicName,
        mut messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError> {
        match self.fault {
            Fault::NewIdOnPublish => messages.iter_mut().for_each(|m| m.id = new_message_id()),
            Fault::LeakToParentTopic => {
                if let Some((parent, _)) = topic.as_str().rsplit_once('.') {
                    let parent = TopicName::new(parent)?;
                    self.inner.publish(&parent, messages.clone(), options).await?;
                }
            }
            _ => {}
        }
        self.inner.publish(topic, messages, options).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.inner.flush().await
    }
}

#[async_trait::async_trait]
impl Subscriber for FaultyBackend {
    async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        let mut inner_spec = spec.clone();
        if self.fault == Fault::DoublePrefetch {
            inner_spec.prefetch = spec.prefetch.saturating_mul(2);
        }
        let inner = self.inner.subscribe(topic, inner_spec).await?;
        let source = FaultySource { inner: Mutex::new(Some(inner)), fault: self.fault };
        Ok(backend::subscription(topic.clone(), spec, Box::new(source)))
    }

    async fn stats(&self, topic: &TopicName, sub: &SubscriptionName) -> Result<SubscriptionStats, BusError> {
        self.inner.stats(topic, sub).await
    }
}

#[async_trait::async_trait]
impl Backend for FaultyBackend {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn capabilities(&self) -> Capabilities {
        let caps = self.inner.capabilities();
        if self.fault == Fault::IgnoresUnsupported { caps.without(Capability::DelayedDelivery) } else { caps }
    }

    async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
        self.inner.ensure_topic(topic, spec).await
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        self.inner.delete_topic(topic).await
    }

    async fn delete_subscription(&self, topic: &TopicName, sub: &SubscriptionName) -> Result<(), BusError> {
        self.inner.delete_subscription(topic, sub).await
    }

    async fn close(&self) -> Result<(), BusError> {
        self.inner.close().await
    }
}

struct FaultySource {
    inner: Mutex<Option<Subscription>>,
    fault: Fault,
}

#[async_trait::async_trait]
impl DeliverySource for FaultySource {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        let d = match self.inner.get_mut().as_mut()?.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        let (mut message, mut info, settled) = d.into_parts();
        match self.fault {
            Fault::DropTraceState => {
                message.extensions.remove("tracestate");
            }
            Fault::AttemptAlwaysOne => info.attempt = 1,
            _ => {}
        }
        Some(Ok(backend::delivery(message, info, Box::new(FaultySettle { settled, fault: self.fault }))))
    }

    async fn close(&mut self) -> Result<(), BusError> {
        match self.inner.get_mut().take() {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }
}

struct FaultySettle {
    settled: Settled,
    fault: Fault,
}

#[async_trait::async_trait]
impl Settle for FaultySettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.settled.ack().await
    }

    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        if self.fault == Fault::NackIsAck { self.settled.ack().await } else { self.settled.nack(nack).await }
    }

    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        self.settled.extend(by).await
    }

    fn abandon(self: Box<Self>) {
        drop(self.settled);
    }
}

/// Runs `case` against the embedded backend with `fault` injected; it must fail.
async fn must_catch(fault: Fault, case: &str) -> anyhow::Result<()> {
    let case = switchboard_conformance::case(case).with_context(|| format!("no case {case}"))?;
    let inner = crate::embedded::harness().await?;
    let harness: Arc<dyn Harness> = Arc::new(FaultyHarness { inner: inner.clone(), fault });
    let result = (case.run)(harness).await;
    inner.shutdown().await;
    match result {
        Err(e) => {
            if std::env::args().any(|a| a == "--nocapture") {
                eprintln!("[faulty] {} caught {fault:?}: {e:#}", case.name);
            }
            Ok(())
        }
        Ok(()) => anyhow::bail!("{} did not catch {fault:?}", case.name),
    }
}

/// Each trial injects one fault and names the cases that must catch it.
pub(crate) fn trials() -> Vec<Trial> {
    [
        (
            "catches_dropped_trace_state",
            Fault::DropTraceState,
            &["trace_context_round_trip", "publish_subscribe_metadata"][..],
        ),
        ("catches_nack_that_acks", Fault::NackIsAck, &["resend_after_nack", "dead_letter_metadata"]),
        ("catches_ignored_prefetch", Fault::DoublePrefetch, &["back_pressure_prefetch"]),
        ("catches_broken_dedup", Fault::NewIdOnPublish, &["dedup"]),
        ("catches_silently_ignored_feature", Fault::IgnoresUnsupported, &["unsupported_features"]),
        ("catches_topic_leak", Fault::LeakToParentTopic, &["topic_isolation"]),
        (
            "catches_wrong_attempt_count",
            Fault::AttemptAlwaysOne,
            &["resend_after_nack", "continue_after_errors", "lease_expiry_redelivers"],
        ),
    ]
    .into_iter()
    .map(|(name, fault, cases)| {
        async_trial(format!("faulty::{name}"), move || async move {
            for case in cases {
                must_catch(fault, case).await?;
            }
            Ok(())
        })
    })
    .collect()
}
