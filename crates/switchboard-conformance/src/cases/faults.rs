//! Faults: subscribers closing with unsettled deliveries, concurrent closes, cancelled
//! `next()` calls, a broker restart in the middle of publishing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use switchboard_core::TopicName;
use switchboard_core::backend::Backend;
use switchboard_core::contract::{BusError, Capability, Mode, Start, SubscriptionSpec};
use tokio::time::{Instant, timeout};

use crate::run::note;
use crate::util::{
    Ctx, Got, ack_all, exactly_once, expect_nothing, publish_on, recv, recv_n, seq_of, spawn_members,
    subscribe_on,
};
use crate::{Harness, Timing};

/// Three times a member opens the queue subscription on a new connection, acks 8 messages,
/// keeps 4 unsettled and closes; a last one drains the rest: every message is acked, the
/// unsettled ones come back (attempt ≥ 2), no acked message comes back.
pub async fn no_loss_across_subscriber_restarts(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "no_loss_across_subscriber_restarts").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("q")?.with_lease(ctx.t.short_lease * 2).with_max_deliveries(None).with_prefetch(12);
    let first = ctx.subscribe(&topic, spec.clone()).await?;
    const N: u32 = 60;
    ctx.publish(&topic, ctx.msgs(0..N)).await?;
    let mut acked = BTreeSet::new();
    let mut held_back = BTreeSet::new();
    let mut sub = Some(first);
    for round in 0..3 {
        let mut s = match sub.take() {
            Some(s) => s,
            None => subscribe_on(&ctx.connect().await?, ctx.t, &topic, spec.clone()).await?,
        };
        let mut unsettled = Vec::new();
        for (i, d) in recv_n(&mut s, 12, ctx.t.wait).await?.into_iter().enumerate() {
            let seq = seq_of(d.message())?;
            ensure!(!acked.contains(&seq), "round {round}: message {seq} was acked before and came back");
            if i < 8 {
                d.ack().await.with_context(|| format!("round {round}: ack of {seq}"))?;
                acked.insert(seq);
                held_back.remove(&seq);
            } else {
                held_back.insert(seq);
                unsettled.push(d);
            }
        }
        timeout(ctx.t.wait, s.close())
            .await
            .context("close with unsettled deliveries hung")?
            .context("close")?;
        drop(unsettled);
    }
    let conn = ctx.connect().await?;
    let mut s = subscribe_on(&conn, ctx.t, &topic, spec).await?;
    while acked.len() < N as usize {
        let d = recv(&mut s, ctx.t.wait).await.with_context(|| {
            format!("{} of {N} acked; still missing {:?}", acked.len(), missing(&acked, N))
        })?;
        let seq = seq_of(d.message())?;
        ensure!(!acked.contains(&seq), "message {seq} was acked before and came back");
        if held_back.remove(&seq) {
            ensure!(
                d.info().attempt >= 2,
                "message {seq} left unsettled came back with attempt {}",
                d.info().attempt
            );
        }
        d.ack().await?;
        acked.insert(seq);
    }
    expect_nothing(&mut s, ctx.t.quiet, "everything acked").await?;
    Ok(())
}

fn missing(acked: &BTreeSet<u32>, n: u32) -> Vec<u32> {
    (0..n).filter(|s| !acked.contains(s)).collect()
}

/// Six members on their own connections take deliveries (acking some, holding some) while a
/// publisher keeps publishing, then all close at once: no close hangs, and two fresh
/// members receive everything not yet acked; nothing acked comes back.
pub async fn concurrent_close(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "concurrent_close").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("q")?.with_lease(ctx.t.short_lease * 2).with_max_deliveries(None).with_prefetch(4);
    let mut subs = Vec::new();
    for _ in 0..6 {
        let conn = ctx.connect().await?;
        subs.push(subscribe_on(&conn, ctx.t, &topic, spec.clone()).await?);
    }
    const N: u32 = 100;
    let publisher = {
        let (bus, topic, msgs, t) = (ctx.bus.clone(), topic.clone(), ctx.msgs(0..N), ctx.t);
        tokio::spawn(async move {
            for batch in msgs.chunks(5) {
                publish_on(&bus, t, &topic, batch.to_vec()).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        })
    };
    let t = ctx.t;
    let phase1 = futures::future::join_all(subs.into_iter().map(|mut s| async move {
        let mut acked = Vec::new();
        let mut unsettled = Vec::new();
        for i in 0..5 {
            let d = recv(&mut s, t.wait).await?;
            if i < 3 {
                acked.push(seq_of(d.message())?);
                d.ack().await?;
            } else {
                unsettled.push(d);
            }
        }
        timeout(t.wait, s.close()).await.context("a concurrent close hung")?.context("close")?;
        drop(unsettled);
        anyhow::Ok(acked)
    }))
    .await;
    let mut acked = BTreeSet::new();
    for r in phase1 {
        for seq in r? {
            ensure!(acked.insert(seq), "message {seq} acked by two members");
        }
    }
    publisher.await??;
    let mut fresh = Vec::new();
    for _ in 0..2 {
        fresh.push(subscribe_on(&ctx.connect().await?, ctx.t, &topic, spec.clone()).await?);
    }
    let mut members = spawn_members(fresh, ack_all(), Duration::ZERO);
    let rest = N as usize - acked.len();
    members.until_acked(ctx.t.wait, rest).await?;
    let got = members.finish(ctx.t).await?;
    exactly_once(&got, (0..N).filter(|s| !acked.contains(s)), "after the concurrent close")?;
    Ok(())
}

/// `next()` futures dropped before completing (timed out after 0–3 ms, or polled once and
/// dropped) while messages arrive lose nothing and consume nothing: every message is later
/// delivered exactly once, at attempt 1, in order on a stream. Runs on every mode the
/// backend has.
pub async fn cancelled_next_loses_nothing(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "cancelled_next_loses_nothing").await?;
    let mut modes = Vec::new();
    if ctx.caps.contains(Capability::Queue) {
        modes.push(ctx.queue("q")?);
    }
    if ctx.caps.contains(Capability::Stream) {
        modes.push(ctx.stream("s")?);
    }
    for spec in modes {
        let topic = ctx.topic(if spec.mode == Mode::Queue { "tq" } else { "ts" })?;
        cancel_round(&ctx, &topic, spec).await?;
    }
    Ok(())
}

async fn cancel_round(ctx: &Ctx, topic: &TopicName, spec: SubscriptionSpec) -> Result<()> {
    let mode = spec.mode;
    let mut sub = ctx.subscribe(topic, spec).await?;
    const N: u32 = 40;
    let publisher = {
        let (bus, topic, msgs, t) = (ctx.bus.clone(), topic.clone(), ctx.msgs(0..N), ctx.t);
        tokio::spawn(async move {
            for m in msgs {
                publish_on(&bus, t, &topic, vec![m]).await?;
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..3))).await;
            }
            anyhow::Ok(())
        })
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + ctx.t.wait;
    let mut cancelled = 0u32;
    while got.len() < N as usize {
        ensure!(
            Instant::now() < deadline,
            "{mode:?}: only {} of {N} received within {:?}",
            got.len(),
            ctx.t.wait
        );
        let next = if cancelled.is_multiple_of(2) {
            match timeout(Duration::from_millis(rand::random_range(0..=3)), sub.next()).await {
                Ok(n) => n,
                Err(_) => {
                    cancelled += 1;
                    continue;
                }
            }
        } else {
            let mut fut = Box::pin(sub.next());
            match futures::poll!(&mut fut) {
                Poll::Ready(n) => n,
                Poll::Pending => {
                    drop(fut);
                    cancelled += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            }
        };
        let d = match next {
            None => bail!("{mode:?}: subscription ended"),
            Some(r) => r.context("next()")?,
        };
        let mut g = Got::of(0, &d)?;
        g.acked = true;
        d.ack().await?;
        got.push(g);
    }
    publisher.await??;
    expect_nothing(&mut sub, ctx.t.quiet, "everything received").await?;
    note!("  cancelled_next_loses_nothing ({mode:?}): {cancelled} next() futures dropped");
    exactly_once(&got, 0..N, &format!("{mode:?} with cancelled next()"))?;
    crate::util::all_first_attempts(&got, &format!("{mode:?} with cancelled next()"))?;
    if mode == Mode::Stream {
        let order: Vec<u32> = got.iter().map(|g| g.seq).collect();
        ensure!(order == (0..N).collect::<Vec<_>>(), "stream order broken by cancelled next(): {order:?}");
    }
    Ok(())
}

/// Publishes one at a time (retrying retryable errors on a fresh connection) while the broker
/// restarts mid-run: every confirmed publish is received, acks made before the restart hold
/// (those messages never come back), deliveries unsettled at the restart come back; a fresh
/// stream subscription from `Earliest` (where supported) gets everything in order.
pub async fn broker_restart_no_loss(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "broker_restart_no_loss").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("q")?.with_max_deliveries(None);
    let mut sub = ctx.subscribe(&topic, spec.clone()).await?;
    const N1: u32 = 30;
    const N: u32 = 60;
    ctx.publish(&topic, ctx.msgs(0..N1)).await?;
    let mut acked = BTreeSet::new();
    let mut unsettled = Vec::new();
    for (i, d) in recv_n(&mut sub, 15, ctx.t.wait).await?.into_iter().enumerate() {
        if i < 10 {
            acked.insert(seq_of(d.message())?);
            d.ack().await?;
        } else {
            unsettled.push(d);
        }
    }
    let (progress_tx, mut progress) = tokio::sync::watch::channel(N1);
    let publisher = {
        let (harness, topic, msgs, t) = (ctx.harness.clone(), topic.clone(), ctx.msgs(N1..N), ctx.t);
        tokio::spawn(async move {
            let mut bus = harness.connect().await?;
            let mut retries = 0;
            for (i, m) in msgs.into_iter().enumerate() {
                retries += publish_retrying(&*harness, &mut bus, t, &topic, m).await?;
                let _ = progress_tx.send(N1 + i as u32 + 1);
            }
            anyhow::Ok(retries)
        })
    };
    timeout(ctx.t.wait, progress.wait_for(|n| *n >= N1 + 10)).await.context("publisher stalled")??;
    let restarted = timeout(ctx.t.wait * 2, ctx.harness.restart_broker()).await.context("restart hung");
    if let Err(e) = restarted.and_then(|r| r.context("restart the broker")) {
        publisher.abort();
        return Err(e);
    }
    drop(unsettled);
    drop(sub);
    let retries = publisher.await.context("publisher panicked")??;
    note!("  broker_restart_no_loss: {retries} publish attempt(s) failed retryably across the restart");

    let conn = ctx.connect().await?;
    let mut sub = subscribe_on(&conn, ctx.t, &topic, spec).await?;
    let mut after = BTreeSet::new();
    while acked.len() + after.len() < N as usize {
        let d = recv(&mut sub, ctx.t.wait).await.with_context(|| {
            let mut have = acked.clone();
            have.extend(after.iter().copied());
            format!("after the restart; missing {:?}", missing(&have, N))
        })?;
        let seq = seq_of(d.message())?;
        ensure!(!acked.contains(&seq), "message {seq}, acked before the restart, was delivered again");
        let first_time = after.insert(seq);
        ensure!(
            first_time || !ctx.caps.contains(Capability::Dedup),
            "message {seq} delivered twice after the restart"
        );
        d.ack().await?;
    }
    expect_nothing(&mut sub, ctx.t.quiet, "everything received after the restart").await?;
    if ctx.caps.contains(Capability::Stream) && ctx.caps.contains(Capability::ReplayFromStart) {
        let mut log =
            subscribe_on(&conn, ctx.t, &topic, ctx.stream("log")?.with_start(Start::Earliest)).await?;
        let mut seen = Vec::new();
        while seen.iter().collect::<BTreeSet<_>>().len() < N as usize {
            let d =
                recv(&mut log, ctx.t.wait).await.context("fresh stream subscription after the restart")?;
            seen.push(seq_of(d.message())?);
            d.ack().await?;
        }
        ensure!(seen.windows(2).all(|w| w[0] <= w[1]), "stream order after restart: {seen:?}");
        if ctx.caps.contains(Capability::Dedup) {
            ensure!(seen.len() == N as usize, "with dedup, a retried publish was stored twice: {seen:?}");
        }
    }
    Ok(())
}

/// Publishes `m`, reconnecting and retrying while the error is retryable (the broker is
/// restarting) for up to `t.wait`; returns how many attempts failed. `Closed` counts too: a
/// closed handle stays closed (so the contract calls it not retryable), but here the harness
/// closed it to restart the broker, and a fresh connection reaches the restarted one.
async fn publish_retrying(
    harness: &dyn Harness,
    bus: &mut Arc<dyn Backend>,
    t: Timing,
    topic: &TopicName,
    m: switchboard_core::Message,
) -> Result<u32> {
    let deadline = Instant::now() + t.wait;
    let mut failed = 0;
    loop {
        let err = match timeout(t.wait, bus.publish(topic, vec![m.clone()], &Default::default())).await {
            Ok(Ok(())) => return Ok(failed),
            Ok(Err(e)) if e.is_retryable() || matches!(e, BusError::Closed) => format!("{e}"),
            Ok(Err(e)) => {
                return Err(e).context("publish during the restart failed with a non-retryable error");
            }
            Err(_) => "no answer".to_owned(),
        };
        failed += 1;
        if Instant::now() >= deadline {
            bail!("publish of {} kept failing across the restart: {err}", m.id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(Ok(fresh)) = timeout(t.wait, harness.connect()).await {
            *bus = fresh;
        }
    }
}
