//! Shared helpers of the cases: unique names, numbered messages, bounded waits, consumer tasks
//! and exact-set checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use switchboard_core::backend::Backend;
use switchboard_core::contract::{
    BusError, Capabilities, Capability, Delivery, Nack, Start, Subscription, SubscriptionSpec, TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, TopicName};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::{Harness, Timing};

/// What one case works with: the harness, a first connection, the capabilities and a unique
/// name prefix.
pub(crate) struct Ctx {
    pub(crate) harness: Arc<dyn Harness>,
    pub(crate) bus: Arc<dyn Backend>,
    pub(crate) caps: Capabilities,
    pub(crate) t: Timing,
    pub(crate) prefix: String,
}

impl Ctx {
    /// Connects for `case` (a name in [`CASES`](crate::CASES)) and checks that the backend
    /// has the capabilities the table says the case needs: the suite lists a case the
    /// backend cannot run as ignored, so getting here without them is an error, not a skip.
    pub(crate) async fn new(harness: Arc<dyn Harness>, case: &str) -> Result<Ctx> {
        let needs = crate::case(case).with_context(|| format!("{case} is not in CASES"))?.needs;
        let t = harness.timing();
        let bus =
            timeout(t.wait, harness.connect()).await.context("connect timed out")?.context("connect")?;
        let caps = bus.capabilities();
        // The harness's restart is checked when the case asks for it.
        if let Some(reason) = needs.unmet(caps, true) {
            bail!("{case} {reason}, which the {} backend does not have ({caps:?})", harness.name());
        }
        // The runner picked the prefix, to delete what the case made when it ends; a case
        // called directly (not through `run_case`) picks its own.
        let prefix = PREFIX.try_with(Clone::clone).unwrap_or_else(|_| new_prefix(case, harness.name()));
        Ok(Ctx { harness, bus, caps, t, prefix })
    }

    pub(crate) fn topic(&self, suffix: &str) -> Result<TopicName> {
        let topic = TopicName::new(format!("{}-{suffix}", self.prefix))?;
        created().topics.push(topic.clone());
        Ok(topic)
    }

    pub(crate) fn sub(&self, suffix: &str) -> Result<SubscriptionName> {
        Ok(SubscriptionName::new(format!("{}-{suffix}", self.prefix))?)
    }

    /// A queue subscription spec that starts at messages published after it is created.
    pub(crate) fn queue(&self, suffix: &str) -> Result<SubscriptionSpec> {
        Ok(SubscriptionSpec::queue(self.sub(suffix)?).with_start(Start::Latest))
    }

    /// A stream subscription spec that starts at messages published after it is created.
    pub(crate) fn stream(&self, suffix: &str) -> Result<SubscriptionSpec> {
        Ok(SubscriptionSpec::stream(self.sub(suffix)?).with_start(Start::Latest))
    }

    /// A queue spec if the backend has queues, else a stream spec, else `None`.
    pub(crate) fn any_mode(&self, suffix: &str) -> Result<Option<SubscriptionSpec>> {
        Ok(if self.caps.contains(Capability::Queue) {
            Some(self.queue(suffix)?)
        } else if self.caps.contains(Capability::Stream) {
            Some(self.stream(suffix)?)
        } else {
            None
        })
    }

    /// Another connection to the broker.
    pub(crate) async fn connect(&self) -> Result<Arc<dyn Backend>> {
        timeout(self.t.wait, self.harness.connect()).await.context("connect timed out")?.context("connect")
    }

    pub(crate) async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription> {
        subscribe_on(&self.bus, self.t, topic, spec).await
    }

    pub(crate) async fn publish(&self, topic: &TopicName, messages: Vec<Message>) -> Result<()> {
        publish_on(&self.bus, self.t, topic, messages).await
    }

    pub(crate) async fn ensure_partitions(&self, topic: &TopicName, partitions: u32) -> Result<()> {
        within(self.t.wait, format_args!("ensure_topic {topic}"), async {
            self.bus.ensure_topic(topic, &TopicSpec::default().with_partitions(partitions)).await
        })
        .await
    }

    /// Message number `seq`: data is the number in decimal, the id is unique to this case.
    pub(crate) fn msg(&self, seq: u32) -> Message {
        Message::new("/conformance", "conformance.numbered", seq.to_string())
            .with_id(format!("{}-{seq}", self.prefix))
    }

    pub(crate) fn msgs(&self, seqs: impl IntoIterator<Item = u32>) -> Vec<Message> {
        seqs.into_iter().map(|s| self.msg(s)).collect()
    }
}

/// Awaits a backend call, failing with `what` when it errs or takes longer than `wait`.
pub(crate) async fn within<T>(
    wait: Duration,
    what: impl Display,
    call: impl Future<Output = Result<T, BusError>>,
) -> Result<T> {
    match timeout(wait, call).await {
        Err(_) => bail!("{what}: no answer within {wait:?}"),
        Ok(r) => r.with_context(|| format!("{what}")),
    }
}

/// Every topic and subscription the cases made, so each case's are deleted when it ends:
/// brokers that outlive the test run (RabbitMQ here) would otherwise keep a queue and a
/// stream per case per run, and run out of file descriptors.
#[derive(Default)]
pub(crate) struct Created {
    pub(crate) topics: Vec<TopicName>,
    pub(crate) subscriptions: Vec<(TopicName, SubscriptionName)>,
}

static CREATED: std::sync::Mutex<Created> =
    std::sync::Mutex::new(Created { topics: Vec::new(), subscriptions: Vec::new() });

fn created() -> std::sync::MutexGuard<'static, Created> {
    CREATED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

tokio::task_local! {
    /// The name prefix [`run_case`](crate::run_case) chose for the case it runs.
    pub(crate) static PREFIX: String;
}

/// A new unique prefix for the names `case` makes on `backend`: `cf-<case>-<backend>-<random>`
/// in the characters names allow. The runner keys the cleanup by it (the same case runs on
/// several backends at once, and each run deletes only what it made on its own broker); the
/// backend is in it so that a leftover on a shared broker says where it came from.
pub(crate) fn new_prefix(case: &str, backend: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
            .collect()
    };
    format!("cf-{}-{}-{:08x}", clean(case), clean(backend), rand::random::<u32>())
}

/// Takes what the case run with `prefix` made (every name it makes is `<prefix>-…`).
pub(crate) fn take_created(prefix: &str) -> Created {
    let prefix = format!("{prefix}-");
    let mut all = created();
    let (topics, rest) =
        std::mem::take(&mut all.topics).into_iter().partition(|t| t.as_str().starts_with(&prefix));
    all.topics = rest;
    let (subscriptions, rest) = std::mem::take(&mut all.subscriptions)
        .into_iter()
        .partition(|(_, s)| s.as_str().starts_with(&prefix));
    all.subscriptions = rest;
    Created { topics, subscriptions }
}

pub(crate) async fn subscribe_on(
    bus: &Arc<dyn Backend>,
    t: Timing,
    topic: &TopicName,
    spec: SubscriptionSpec,
) -> Result<Subscription> {
    {
        let mut created = created();
        created.subscriptions.push((topic.clone(), spec.name.clone()));
        if let Ok(Some(dlq)) = spec.dead_letter_topic_for(topic) {
            created.topics.push(dlq);
        }
    }
    let what = format!("subscribe {}/{} ({:?})", topic, spec.name, spec.mode);
    within(t.wait, what, bus.subscribe(topic, spec)).await
}

pub(crate) async fn publish_on(
    bus: &Arc<dyn Backend>,
    t: Timing,
    topic: &TopicName,
    messages: Vec<Message>,
) -> Result<()> {
    let what = format!("publish {} message(s) to {topic}", messages.len());
    within(t.wait, what, bus.publish(topic, messages, &Default::default())).await
}

/// The number a message built by [`Ctx::msg`] carries.
pub(crate) fn seq_of(m: &Message) -> Result<u32> {
    let text = std::str::from_utf8(&m.data).with_context(|| format!("message {} data is not UTF-8", m.id))?;
    text.parse().with_context(|| format!("message {} data {text:?} is not a sequence number", m.id))
}

/// The next delivery within `wait`.
pub(crate) async fn recv(sub: &mut Subscription, wait: Duration) -> Result<Delivery> {
    let (topic, name) = (sub.topic().clone(), sub.spec().name.clone());
    match timeout(wait, sub.next()).await {
        Err(_) => bail!("no delivery on {topic}/{name} within {wait:?}"),
        Ok(None) => bail!("subscription {topic}/{name} ended unexpectedly"),
        Ok(Some(Err(e))) => Err(e).with_context(|| format!("next() on {topic}/{name}")),
        Ok(Some(Ok(d))) => Ok(d),
    }
}

/// `n` deliveries, each within `wait`.
pub(crate) async fn recv_n(sub: &mut Subscription, n: usize, wait: Duration) -> Result<Vec<Delivery>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(recv(sub, wait).await.with_context(|| format!("waiting for delivery {} of {n}", i + 1))?);
    }
    Ok(out)
}

/// Fails if anything is delivered within `quiet`.
pub(crate) async fn expect_nothing(sub: &mut Subscription, quiet: Duration, why: &str) -> Result<()> {
    match timeout(quiet, sub.next()).await {
        Err(_) => Ok(()),
        Ok(None) => bail!("subscription {}/{} ended unexpectedly", sub.topic(), sub.spec().name),
        Ok(Some(Err(e))) => Err(e).context("next() while expecting nothing"),
        Ok(Some(Ok(d))) => bail!(
            "unexpected delivery ({why}): message {} data {:?} attempt {}",
            d.message().id,
            String::from_utf8_lossy(&d.message().data),
            d.info().attempt
        ),
    }
}

/// `Ok(())` if `r` failed with an error `is` accepts, else an error naming `expected`.
pub(crate) fn expect_err<T: std::fmt::Debug>(
    r: Result<T, BusError>,
    what: &str,
    expected: &str,
    is: impl Fn(&BusError) -> bool,
) -> Result<()> {
    match r {
        Err(e) if is(&e) => Ok(()),
        Err(e) => bail!("{what}: expected {expected}, got the error {e:?} ({e})"),
        Ok(v) => bail!("{what}: expected {expected}, got Ok({v:?})"),
    }
}

/// What a member did with a delivery.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Ack,
    Nack(Nack),
}

/// One delivery as a member saw it, recorded before it was settled.
#[derive(Clone, Debug)]
pub(crate) struct Got {
    pub(crate) member: usize,
    pub(crate) seq: u32,
    pub(crate) attempt: u32,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) key: Option<String>,
    pub(crate) acked: bool,
}

impl Got {
    pub(crate) fn of(member: usize, d: &Delivery) -> Result<Got> {
        Ok(Got {
            member,
            seq: seq_of(d.message())?,
            attempt: d.info().attempt,
            partition: d.info().partition,
            offset: d.info().offset,
            key: d.message().partition_key().map(str::to_owned),
            acked: false,
        })
    }
}

pub(crate) type Policy = Arc<dyn Fn(&Got) -> Action + Send + Sync>;

pub(crate) fn ack_all() -> Policy {
    Arc::new(|_| Action::Ack)
}

/// Members of subscriptions consuming in tasks of their own, reporting every delivery.
pub(crate) struct Members {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<()>>>,
    rx: mpsc::UnboundedReceiver<Result<Got>>,
    pub(crate) got: Vec<Got>,
}

/// Starts one task per subscription; each handles a delivery by recording it, waiting up to
/// `jitter` (random), then settling it as `policy` says.
pub(crate) fn spawn_members(subs: Vec<Subscription>, policy: Policy, jitter: Duration) -> Members {
    let (stop, stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::unbounded_channel();
    let tasks = subs
        .into_iter()
        .enumerate()
        .map(|(member, sub)| {
            let (tx, stop_rx, policy) = (tx.clone(), stop_rx.clone(), policy.clone());
            tokio::spawn(async move {
                let r = member_loop(member, sub, &policy, &tx, stop_rx, jitter).await;
                if let Err(e) = &r {
                    let _ = tx.send(Err(anyhow::anyhow!("member {member}: {e:#}")));
                }
                r
            })
        })
        .collect();
    Members { stop, tasks, rx, got: Vec::new() }
}

async fn member_loop(
    member: usize,
    mut sub: Subscription,
    policy: &Policy,
    tx: &mpsc::UnboundedSender<Result<Got>>,
    mut stop: watch::Receiver<bool>,
    jitter: Duration,
) -> Result<()> {
    loop {
        let next = tokio::select! {
            _ = stop.changed() => break,
            next = sub.next() => next,
        };
        let d = match next {
            None => bail!("the subscription ended before the member was stopped"),
            Some(Err(e)) => return Err(e).context("next()"),
            Some(Ok(d)) => d,
        };
        let mut got = Got::of(member, &d)?;
        let action = policy(&got);
        got.acked = matches!(action, Action::Ack);
        let seq = got.seq;
        let _ = tx.send(Ok(got));
        if !jitter.is_zero() {
            let ms = rand::random_range(0..=jitter.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match action {
            Action::Ack => d.ack().await.with_context(|| format!("ack of message {seq}"))?,
            Action::Nack(n) => d.nack(n).await.with_context(|| format!("nack of message {seq}"))?,
        }
    }
    let t = Timing::default();
    timeout(t.wait, sub.close()).await.context("close() of a stopped member hung")?.context("close()")?;
    Ok(())
}

impl Members {
    /// Collects deliveries until `done` holds, failing after `wait`.
    pub(crate) async fn until(
        &mut self,
        wait: Duration,
        what: &str,
        done: impl Fn(&[Got]) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + wait;
        while !done(&self.got) {
            match timeout_at(deadline, self.rx.recv()).await {
                Err(_) => {
                    bail!("timed out after {wait:?} waiting for {what}; so far {}", describe(&self.got))
                }
                Ok(None) => bail!("every member stopped before {what}"),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(g))) => self.got.push(g),
            }
        }
        Ok(())
    }

    /// Collects until `n` distinct messages are acked.
    pub(crate) async fn until_acked(&mut self, wait: Duration, n: usize) -> Result<()> {
        self.until(wait, &format!("{n} distinct acked messages"), |g| acked_set(g).len() >= n).await
    }

    /// Watches `quiet` longer for extra deliveries, stops the members and returns all.
    pub(crate) async fn finish(mut self, t: Timing) -> Result<Vec<Got>> {
        let deadline = Instant::now() + t.quiet;
        loop {
            match timeout_at(deadline, self.rx.recv()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(g))) => self.got.push(g),
            }
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            timeout(t.wait, task)
                .await
                .context("a member did not stop")?
                .context("a member task panicked")??;
        }
        Ok(self.got)
    }
}

pub(crate) fn acked_set(got: &[Got]) -> BTreeSet<u32> {
    got.iter().filter(|g| g.acked).map(|g| g.seq).collect()
}

pub(crate) fn describe(got: &[Got]) -> String {
    let distinct: BTreeSet<u32> = got.iter().map(|g| g.seq).collect();
    format!(
        "{} deliveries of {} distinct messages ({} acked, {} redeliveries)",
        got.len(),
        distinct.len(),
        acked_set(got).len(),
        got.iter().filter(|g| g.attempt > 1).count()
    )
}

fn first<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> String {
    let all: Vec<T> = items.into_iter().collect();
    let shown: Vec<_> = all.iter().take(20).collect();
    if all.len() > 20 { format!("{shown:?} … ({} in all)", all.len()) } else { format!("{shown:?}") }
}

/// Every expected message acked exactly once, nothing else acked.
pub(crate) fn exactly_once(got: &[Got], expected: impl IntoIterator<Item = u32>, label: &str) -> Result<()> {
    let expected: BTreeSet<u32> = expected.into_iter().collect();
    let mut acks: BTreeMap<u32, usize> = BTreeMap::new();
    for g in got.iter().filter(|g| g.acked) {
        *acks.entry(g.seq).or_default() += 1;
    }
    let missing: Vec<u32> = expected.iter().copied().filter(|s| !acks.contains_key(s)).collect();
    let twice: Vec<(u32, usize)> = acks.iter().filter(|(_, n)| **n > 1).map(|(s, n)| (*s, *n)).collect();
    let unexpected: Vec<u32> = acks.keys().copied().filter(|s| !expected.contains(s)).collect();
    ensure!(
        missing.is_empty() && twice.is_empty() && unexpected.is_empty(),
        "{label}: expected each of {} messages exactly once; missing {}, delivered more than once (seq, times) {}, \
         not expected {}; {}",
        expected.len(),
        first(missing),
        first(twice),
        first(unexpected),
        describe(got)
    );
    Ok(())
}

/// No delivery was a redelivery (nothing gave the backend a reason to redeliver).
pub(crate) fn all_first_attempts(got: &[Got], label: &str) -> Result<()> {
    let again: Vec<(u32, u32)> = got.iter().filter(|g| g.attempt != 1).map(|g| (g.seq, g.attempt)).collect();
    ensure!(
        again.is_empty(),
        "{label}: deliveries with attempt != 1 though none was nacked or expired: {}",
        first(again)
    );
    Ok(())
}

/// Stats are eventually consistent: polls until `ok` holds or `wait` passes.
pub(crate) async fn poll_until<T: std::fmt::Debug>(
    wait: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T>,
    ok: impl Fn(&T) -> bool,
) -> Result<T> {
    let deadline = Instant::now() + wait;
    loop {
        let v = probe().await?;
        if ok(&v) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what}: still {v:?} after {wait:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(prefix: &str) -> (TopicName, SubscriptionName) {
        let topic = TopicName::new(format!("{prefix}-t")).expect("a topic name");
        let sub = SubscriptionName::new(format!("{prefix}-q")).expect("a subscription name");
        let mut created = created();
        created.topics.push(topic.clone());
        created.subscriptions.push((topic.clone(), sub.clone()));
        (topic, sub)
    }

    #[test]
    fn the_same_case_on_two_backends_is_cleaned_up_separately() {
        let (amqp_prefix, nats_prefix) = (new_prefix("dedup", "amqp"), new_prefix("dedup", "nats"));
        let (amqp_topic, amqp_sub) = register(&amqp_prefix);
        let (nats_topic, nats_sub) = register(&nats_prefix);

        let amqp = take_created(&amqp_prefix);
        assert_eq!(amqp.topics, vec![amqp_topic.clone()]);
        assert_eq!(amqp.subscriptions, vec![(amqp_topic, amqp_sub)]);

        let nats = take_created(&nats_prefix);
        assert_eq!(nats.topics, vec![nats_topic.clone()]);
        assert_eq!(nats.subscriptions, vec![(nats_topic, nats_sub)]);

        let again = take_created(&amqp_prefix);
        assert!(again.topics.is_empty() && again.subscriptions.is_empty());
    }

    #[test]
    fn prefixes_name_the_case_and_the_backend_in_valid_characters() {
        let prefix = new_prefix("order_per_key", "Faulty Backend_2");
        assert!(prefix.starts_with("cf-order-per-key-faulty-backend-2-"), "{prefix}");
        TopicName::new(format!("{prefix}-t")).expect("a valid topic name");
        assert_ne!(new_prefix("dedup", "nats"), new_prefix("dedup", "nats"));
    }
}
