//! Optional features and errors: dead letters, delays, dedup, stats, bad input, unsupported
//! features.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use switchboard_core::contract::{
    BusError, Capability, DeadLetterReason, Delivery, Mode, Nack, PublishOptions, Start, SubscriptionSpec,
    dead_letter_ext,
};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};
use tokio::time::Instant;

use crate::Harness;
use crate::run::note;
use crate::util::{Ctx, expect_err, expect_nothing, poll_until, recv, recv_n, seq_of, within};

/// Checks a dead letter against the original and the expected metadata.
fn check_dead_letter(
    dl: &Delivery,
    original: &Message,
    topic: &TopicName,
    sub: &SubscriptionName,
    reason: DeadLetterReason,
    attempts: u32,
    error: Option<&str>,
) -> Result<()> {
    let m = dl.message();
    ensure!(m.id == original.id, "dead letter id {} != original {}", m.id, original.id);
    ensure!(
        m.data == original.data && m.source == original.source && m.ty == original.ty,
        "dead letter body changed"
    );
    for (k, v) in &original.extensions {
        ensure!(
            m.extensions.get(k) == Some(v),
            "dead letter lost extension {k}={v:?}: {:?}",
            m.extensions.get(k)
        );
    }
    let ext = |name: &str| m.extensions.get(name).map(String::as_str);
    let want = [
        (dead_letter_ext::REASON, Some(reason.as_str().to_owned())),
        (dead_letter_ext::TOPIC, Some(topic.to_string())),
        (dead_letter_ext::SUBSCRIPTION, Some(sub.to_string())),
        (dead_letter_ext::ATTEMPTS, Some(attempts.to_string())),
        (dead_letter_ext::ERROR, error.map(str::to_owned)),
    ];
    for (name, value) in want {
        ensure!(
            ext(name) == value.as_deref(),
            "dead letter extension {name}: expected {value:?}, got {:?} (all: {:?})",
            ext(name),
            m.extensions
        );
    }
    for name in [dead_letter_ext::PARTITION, dead_letter_ext::OFFSET] {
        if let Some(v) = ext(name) {
            ensure!(v.parse::<u64>().is_ok(), "dead letter extension {name}={v:?} is not a number");
        }
    }
    Ok(())
}

/// `max_deliveries` 2, nacked twice with an error: the message lands on
/// `dead_letter_topic_for` with `dlreason` nacked, `dltopic`, `dlsubscription`,
/// `dlattempts` 2 and the last `dlerror`, its own attributes intact, and is not delivered
/// again; with an explicit dead-letter topic and `max_deliveries` 1 one nack is enough.
pub async fn dead_letter_metadata(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "dead_letter_metadata").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("q")?.with_max_deliveries(Some(2));
    let dlq = spec
        .dead_letter_topic_for(&topic)?
        .context("a queue spec with max_deliveries has a dead-letter topic")?;
    let mut dl_sub = ctx.subscribe(&dlq, ctx.queue("dl")?).await?;
    let mut sub = ctx.subscribe(&topic, spec.clone()).await?;
    let original = ctx.msg(7).with_key("dl-key").with_extension("cforigin", "kept");
    ctx.publish(&topic, vec![original.clone()]).await?;
    for (attempt, error) in [(1, "boom one"), (2, "boom two")] {
        let d = recv(&mut sub, ctx.t.wait).await.with_context(|| format!("delivery attempt {attempt}"))?;
        ensure!(d.info().attempt == attempt, "delivery attempt {} where {attempt} was due", d.info().attempt);
        d.nack(Nack::now().with_error(error)).await.context("nack")?;
    }
    let dl = recv(&mut dl_sub, ctx.t.wait).await.context("nothing on the dead-letter topic")?;
    check_dead_letter(&dl, &original, &topic, &spec.name, DeadLetterReason::Nacked, 2, Some("boom two"))?;
    dl.ack().await?;
    expect_nothing(&mut sub, ctx.t.quiet, "the message was dead-lettered").await?;
    expect_nothing(&mut dl_sub, ctx.t.quiet, "one message was dead-lettered once").await?;

    let custom = ctx.topic("custom-dlq")?;
    let mut custom_sub = ctx.subscribe(&custom, ctx.queue("cdl")?).await?;
    let spec1 = ctx.queue("q1")?.with_max_deliveries(Some(1)).with_dead_letter_topic(custom.clone());
    ensure!(
        spec1.dead_letter_topic_for(&topic)? == Some(custom.clone()),
        "dead_letter_topic_for ignores the setting"
    );
    let mut sub1 = ctx.subscribe(&topic, spec1.clone()).await?;
    let second = ctx.msg(8);
    ctx.publish(&topic, vec![second.clone()]).await?;
    // The first subscription gets it too; ack it there.
    recv(&mut sub, ctx.t.wait).await?.ack().await?;
    recv(&mut sub1, ctx.t.wait).await?.nack(Nack::now().with_error("once")).await?;
    let dl = recv(&mut custom_sub, ctx.t.wait).await.context("nothing on the custom dead-letter topic")?;
    check_dead_letter(&dl, &second, &topic, &spec1.name, DeadLetterReason::Nacked, 1, Some("once"))?;
    dl.ack().await?;
    expect_nothing(&mut sub1, ctx.t.quiet, "dead-lettered after one nack").await?;
    Ok(())
}

/// `max_deliveries` 1 and a short lease, the delivery never settled: the message lands on
/// the dead-letter topic with `dlreason` "lease expired", `dlattempts` 1 and no `dlerror`,
/// and is not delivered again.
pub async fn dead_letter_after_lease_expiry(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "dead_letter_after_lease_expiry").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("q")?.with_max_deliveries(Some(1)).with_lease(ctx.t.short_lease);
    let dlq = spec.dead_letter_topic_for(&topic)?.context("dead-letter topic")?;
    let mut dl_sub = ctx.subscribe(&dlq, ctx.queue("dl")?).await?;
    let mut sub = ctx.subscribe(&topic, spec.clone()).await?;
    let original = ctx.msg(1);
    ctx.publish(&topic, vec![original.clone()]).await?;
    let (_, _, stalled) = recv(&mut sub, ctx.t.wait).await?.into_parts();
    let dl =
        recv(&mut dl_sub, ctx.t.wait).await.context("nothing on the dead-letter topic after the lease")?;
    check_dead_letter(&dl, &original, &topic, &spec.name, DeadLetterReason::LeaseExpired, 1, None)?;
    dl.ack().await?;
    expect_err(stalled.ack().await, "ack after the message was dead-lettered", "LeaseLost", |e| {
        matches!(e, BusError::LeaseLost { .. })
    })?;
    expect_nothing(&mut sub, ctx.t.quiet, "the message was dead-lettered").await?;
    Ok(())
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// `deliver_at` now + 500 ms: a message published without delay after it arrives first; the
/// delayed ones arrive not before their time (less the clock slack) and within the wait. The
/// lateness is reported, not asserted.
pub async fn delayed_delivery(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "delayed_delivery").await?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, ctx.queue("q")?).await?;
    let at = now().saturating_add(Duration::from_millis(500));
    let options = PublishOptions::default().with_deliver_at(at);
    within(ctx.t.wait, "delayed publish", ctx.bus.publish(&topic, ctx.msgs([1, 2]), &options)).await?;
    ctx.publish(&topic, vec![ctx.msg(0)]).await?;
    let d = recv(&mut sub, ctx.t.wait).await?;
    ensure!(
        seq_of(d.message())? == 0,
        "delayed message {} arrived before the undelayed one",
        seq_of(d.message())?
    );
    d.ack().await?;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut sub, ctx.t.wait).await.context("delayed message")?;
        let arrived = now();
        ensure!(
            arrived.saturating_add(ctx.t.clock_slack) >= at,
            "delayed message arrived {:?} before its deliver_at",
            at.duration_since(arrived)
        );
        note!(
            "  delayed_delivery: message {} late by {:?}",
            seq_of(d.message())?,
            arrived.duration_since(at)
        );
        ensure!(d.info().attempt == 1, "a delayed message's first delivery has attempt {}", d.info().attempt);
        seen.push(seq_of(d.message())?);
        d.ack().await?;
    }
    seen.sort_unstable();
    ensure!(seen == [1, 2], "delayed messages received: {seen:?}");
    expect_nothing(&mut sub, ctx.t.quiet, "all acked").await?;
    Ok(())
}

/// A nack with a 600 ms delay: the message comes back (attempt 2) not before the delay, and
/// a message published after the nack is delivered in the meantime.
pub async fn nack_delay(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "nack_delay").await?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, ctx.queue("q")?).await?;
    ctx.publish(&topic, vec![ctx.msg(0)]).await?;
    let d = recv(&mut sub, ctx.t.wait).await?;
    let delay = Duration::from_millis(600);
    let nacked = Instant::now();
    d.nack(Nack::after(delay)).await.context("nack with delay")?;
    ctx.publish(&topic, vec![ctx.msg(1)]).await?;
    let other = recv(&mut sub, ctx.t.wait).await?;
    ensure!(seq_of(other.message())? == 1, "the nacked message came back before its delay");
    other.ack().await?;
    let again = recv(&mut sub, ctx.t.wait).await.context("the delayed nack never came back")?;
    let after = nacked.elapsed();
    ensure!(after + ctx.t.clock_slack >= delay, "redelivered {after:?} after a nack with a {delay:?} delay");
    ensure!(seq_of(again.message())? == 0 && again.info().attempt == 2, "expected message 0 attempt 2");
    note!("  nack_delay: redelivered {after:?} after the nack (delay {delay:?})");
    again.ack().await?;
    expect_nothing(&mut sub, ctx.t.quiet, "all acked").await?;
    Ok(())
}

/// The same message id published twice (the second time with other data) and once more in
/// a later call is stored once: the subscription gets the first version once and a
/// different message normally.
pub async fn dedup(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "dedup").await?;
    let spec = ctx.any_mode("s")?.context("needs queue or stream")?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, spec).await?;
    let id = format!("{}-dup", ctx.prefix);
    let first = Message::new("/conformance", "conformance.dedup", "1").with_id(id.clone());
    let changed = Message::new("/conformance", "conformance.dedup", "2").with_id(id.clone());
    ctx.publish(&topic, vec![first.clone()]).await?;
    ctx.publish(&topic, vec![changed])
        .await
        .context("a duplicate publish must succeed (and store nothing)")?;
    ctx.publish(&topic, vec![first.clone()]).await?;
    ctx.publish(&topic, vec![ctx.msg(3)]).await?;
    let mut got = Vec::new();
    for d in recv_n(&mut sub, 2, ctx.t.wait).await? {
        got.push((d.message().id.clone(), seq_of(d.message())?));
        d.ack().await?;
    }
    expect_nothing(&mut sub, ctx.t.quiet, "duplicates must not be stored").await?;
    got.sort();
    let mut want = vec![(id, 1), (ctx.msg(3).id, 3)];
    want.sort();
    ensure!(got == want, "received {got:?}, expected {want:?}");
    Ok(())
}

/// Stats follow the subscription: 10 published → backlog 10; 4 acked → backlog 6; 2 held
/// unsettled (prefetch 2) → in flight 2; all acked → backlog 0, in flight 0; an unknown
/// subscription is `NotFound`. Polled, since stats may lag.
pub async fn stats_backlog(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "stats_backlog").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("q")?.with_prefetch(2);
    let mut sub = ctx.subscribe(&topic, spec.clone()).await?;
    let name = spec.name.clone();
    let (bus, wait) = (ctx.bus.clone(), ctx.t.wait);
    let stats = async || within(wait, "stats", bus.stats(&topic, &name)).await;
    poll_until(wait, "backlog of a new subscription", stats, |s| s.backlog == 0).await?;
    ctx.publish(&topic, ctx.msgs(0..10)).await?;
    poll_until(wait, "backlog after publishing 10", stats, |s| s.backlog == 10).await?;
    for _ in 0..4 {
        recv(&mut sub, wait).await?.ack().await?;
    }
    poll_until(wait, "backlog after acking 4", stats, |s| s.backlog == 6).await?;
    let held = recv_n(&mut sub, 2, wait).await?;
    poll_until(wait, "2 held unsettled", stats, |s| s.backlog == 6 && s.in_flight == 2).await?;
    for d in held {
        d.ack().await?;
    }
    for _ in 0..4 {
        recv(&mut sub, wait).await?.ack().await?;
    }
    poll_until(wait, "everything acked", stats, |s| s.backlog == 0 && s.in_flight == 0).await?;
    let unknown = ctx.sub("nobody")?;
    expect_err(ctx.bus.stats(&topic, &unknown).await, "stats of an unknown subscription", "NotFound", |e| {
        matches!(e, BusError::NotFound { .. })
    })?;
    Ok(())
}

fn invalid_message(e: &BusError) -> bool {
    matches!(e, BusError::InvalidMessage(_))
}

fn invalid_argument(e: &BusError) -> bool {
    matches!(e, BusError::InvalidArgument(_))
}

/// Bad input gets a clear error and changes nothing: invalid messages (extension name,
/// empty id, bad time, wrong specversion, control character) → `InvalidMessage` before
/// anything of the batch is sent; bad specs (prefetch 0, lease 0, `max_deliveries` 0,
/// `ordered_by_key` on a stream) → `InvalidArgument`; reopening a subscription in the other
/// mode → `Conflict`; the connection still works afterwards.
pub async fn invalid_input_errors(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "invalid_input_errors").await?;
    let spec = ctx.any_mode("s")?.context("needs queue or stream")?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, spec.clone()).await?;
    let mut bad_time = ctx.msg(3);
    bad_time.time = Some("yesterday".into());
    let mut bad_version = ctx.msg(4);
    bad_version.specversion = "0.3".into();
    let cases = [
        ("an invalid extension name", ctx.msg(1).with_extension("Bad_Name", "x")),
        ("an empty id", ctx.msg(2).with_id("")),
        ("a time that is not RFC 3339", bad_time),
        ("specversion 0.3", bad_version),
        ("a control character in subject", ctx.msg(5).with_subject("a\nb")),
        ("a reserved extension name", ctx.msg(6).with_extension("data", "x")),
    ];
    for (what, bad) in cases {
        let batch = vec![ctx.msg(100), bad];
        let r = tokio::time::timeout(ctx.t.wait, ctx.bus.publish(&topic, batch, &PublishOptions::default()))
            .await
            .context("publish hung")?;
        expect_err(r, &format!("publishing a batch with {what}"), "InvalidMessage", invalid_message)?;
    }
    expect_nothing(&mut sub, ctx.t.quiet, "no valid message of a rejected batch may be sent").await?;

    let base = ctx.any_mode("bad")?.context("mode")?;
    let mut specs: Vec<(&str, SubscriptionSpec)> = vec![
        ("prefetch 0", base.clone().with_prefetch(0)),
        ("lease 0", base.clone().with_lease(Duration::ZERO)),
    ];
    if ctx.caps.contains(Capability::Queue) {
        specs.push(("max_deliveries 0", ctx.queue("bad")?.with_max_deliveries(Some(0))));
    }
    if ctx.caps.contains(Capability::Stream) {
        let mut s = ctx.stream("bad")?;
        s.ordered_by_key = true;
        specs.push(("ordered_by_key on a stream", s));
    }
    for (what, spec) in specs {
        let r = tokio::time::timeout(ctx.t.wait, ctx.bus.subscribe(&topic, spec))
            .await
            .context("subscribe hung")?;
        expect_err(r, &format!("subscribing with {what}"), "InvalidArgument", invalid_argument)?;
    }
    if ctx.caps.contains(Capability::Queue) && ctx.caps.contains(Capability::Stream) {
        let other = if spec.mode == Mode::Queue { ctx.stream("s")? } else { ctx.queue("s")? };
        let r = tokio::time::timeout(ctx.t.wait, ctx.bus.subscribe(&topic, other))
            .await
            .context("subscribe hung")?;
        expect_err(r, "reopening a subscription in the other mode", "Conflict", |e| {
            matches!(e, BusError::Conflict { .. })
        })?;
    }
    ctx.publish(&topic, vec![ctx.msg(0)]).await.context("a valid publish after the rejected ones")?;
    let d = recv(&mut sub, ctx.t.wait).await?;
    ensure!(seq_of(d.message())? == 0, "expected message 0, got {}", seq_of(d.message())?);
    d.ack().await?;
    expect_nothing(&mut sub, ctx.t.quiet, "one valid message").await?;
    Ok(())
}

fn unsupported(e: &BusError) -> bool {
    matches!(e, BusError::Unsupported { .. })
}

/// Each capability the backend declares false is refused with `Unsupported` (never silently
/// ignored): queue/stream subscriptions, `Earliest`, `ordered_by_key`, `deliver_at` (nothing
/// is sent), stats, a delayed nack, lease extension. Listed as ignored when every probed flag
/// is on.
pub async fn unsupported_features(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "unsupported_features").await?;
    let c = ctx.caps;
    let topic = ctx.topic("t")?;
    let mut probed = Vec::new();
    let subscribe_err = async |what: &str, spec: SubscriptionSpec| -> Result<()> {
        let r = tokio::time::timeout(ctx.t.wait, ctx.bus.subscribe(&topic, spec))
            .await
            .context("subscribe hung")?;
        expect_err(r, what, "Unsupported", unsupported)
    };
    if !c.contains(Capability::Queue) {
        subscribe_err("a queue subscription", ctx.queue("uq")?).await?;
        probed.push("queue");
    }
    if !c.contains(Capability::Stream) {
        subscribe_err("a stream subscription", ctx.stream("us")?).await?;
        probed.push("stream");
    }
    if !c.contains(Capability::ReplayFromStart)
        && let Some(spec) = ctx.any_mode("ue")?
    {
        subscribe_err("a subscription starting at Earliest", spec.with_start(Start::Earliest)).await?;
        probed.push("replay_from_start");
    }
    if !c.contains(Capability::PerKeyOrder) && c.contains(Capability::Queue) {
        subscribe_err("ordered_by_key", ctx.queue("uk")?.with_ordered_by_key(true)).await?;
        probed.push("per_key_order");
    }
    if !c.contains(Capability::Stats) {
        let spec = ctx.any_mode("ust")?;
        if let Some(spec) = spec {
            let _sub = ctx.subscribe(&topic, spec.clone()).await?;
            let r = tokio::time::timeout(ctx.t.wait, ctx.bus.stats(&topic, &spec.name))
                .await
                .context("stats hung")?;
            expect_err(r, "stats", "Unsupported", unsupported)?;
            probed.push("stats");
        }
    }
    if !c.contains(Capability::DelayedDelivery)
        && let Some(spec) = ctx.any_mode("ud")?
    {
        let mut sub = ctx.subscribe(&topic, spec).await?;
        let options =
            PublishOptions::default().with_deliver_at(now().saturating_add(Duration::from_millis(200)));
        let r = tokio::time::timeout(ctx.t.wait, ctx.bus.publish(&topic, vec![ctx.msg(1)], &options))
            .await
            .context("publish hung")?;
        expect_err(r, "publish with deliver_at", "Unsupported", unsupported)?;
        expect_nothing(&mut sub, ctx.t.quiet * 2, "a refused delayed publish must send nothing").await?;
        probed.push("delayed_delivery");
    }
    if c.contains(Capability::Queue)
        && (!c.contains(Capability::NackDelay) || !c.contains(Capability::LeaseExtension))
    {
        let mut sub = ctx.subscribe(&topic, ctx.queue("un")?).await?;
        ctx.publish(&topic, vec![ctx.msg(2)]).await?;
        let d = recv(&mut sub, ctx.t.wait).await?;
        if !c.contains(Capability::LeaseExtension) {
            expect_err(d.extend(Duration::from_secs(5)).await, "extend", "Unsupported", unsupported)?;
            probed.push("lease_extension");
        }
        if !c.contains(Capability::NackDelay) {
            expect_err(
                d.nack(Nack::after(Duration::from_secs(1))).await,
                "nack with delay",
                "Unsupported",
                unsupported,
            )?;
            probed.push("nack_delay");
        } else {
            d.ack().await?;
        }
    }
    // CASES lists this case only for a backend with a probed flag off.
    ensure!(!probed.is_empty(), "probed nothing, though the backend lacks a flag this case probes");
    note!("  unsupported_features: refused as expected: {}", probed.join(", "));
    Ok(())
}
