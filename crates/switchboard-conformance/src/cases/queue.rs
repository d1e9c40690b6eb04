//! Queue subscriptions: competing consumers, per-key order, nack, prefetch, leases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use switchboard_core::contract::{BusError, Capability, Nack};
use tokio::time::Instant;

use crate::Harness;
use crate::run::note;
use crate::util::{
    Action, Ctx, Got, Policy, ack_all, all_first_attempts, exactly_once, expect_err, expect_nothing, recv,
    recv_n, seq_of, spawn_members, subscribe_on,
};

/// Four members of one queue subscription, each on its own connection: every message goes
/// to exactly one member, and all are delivered.
pub async fn competing_consumers(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "competing_consumers").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("workers")?.with_prefetch(4);
    let mut subs = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..4 {
        let conn = ctx.connect().await?;
        subs.push(subscribe_on(&conn, ctx.t, &topic, spec.clone()).await?);
        conns.push(conn);
    }
    let mut members = spawn_members(subs, ack_all(), Duration::from_millis(2));
    const N: u32 = 120;
    for chunk in (0..N).collect::<Vec<_>>().chunks(10) {
        ctx.publish(&topic, ctx.msgs(chunk.iter().copied())).await?;
    }
    members.until_acked(ctx.t.wait, N as usize).await?;
    let got = members.finish(ctx.t).await?;
    exactly_once(&got, 0..N, "competing consumers")?;
    all_first_attempts(&got, "competing consumers")?;
    let mut per_member = [0usize; 4];
    for g in &got {
        per_member[g.member] += 1;
    }
    note!("  competing_consumers: deliveries per member {per_member:?}");
    Ok(())
}

/// `ordered_by_key` on a 4-partition topic, three members with prefetch 8 consuming in
/// parallel, some messages nacked once: per key, messages are handed out strictly in publish
/// order, a nacked message coming back before the next one of its key.
pub async fn order_per_key(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "order_per_key").await?;
    let topic = ctx.topic("t")?;
    ctx.ensure_partitions(&topic, 4).await?;
    let spec = ctx.queue("ordered")?.with_ordered_by_key(true).with_prefetch(8);
    let mut subs = Vec::new();
    for _ in 0..3 {
        let conn = ctx.connect().await?;
        subs.push(subscribe_on(&conn, ctx.t, &topic, spec.clone()).await?);
    }
    const KEYS: u32 = 6;
    const PER_KEY: u32 = 25;
    let nack_first: fn(u32) -> bool = |i| i % 7 == 3;
    let policy: Policy = Arc::new(move |g: &Got| {
        if g.attempt == 1 && nack_first(g.seq % 1000) {
            Action::Nack(Nack::now().with_error("conformance: first attempt refused"))
        } else {
            Action::Ack
        }
    });
    let mut members = spawn_members(subs, policy, Duration::from_millis(3));
    let publishers: Vec<_> = (0..KEYS)
        .map(|k| {
            let msgs: Vec<_> =
                (0..PER_KEY).map(|i| ctx.msg(k * 1000 + i).with_key(format!("k{k}"))).collect();
            let (bus, topic, t) = (ctx.bus.clone(), topic.clone(), ctx.t);
            tokio::spawn(async move {
                for batch in msgs.chunks(5) {
                    crate::util::publish_on(&bus, t, &topic, batch.to_vec()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for p in publishers {
        p.await??;
    }
    let n = (KEYS * PER_KEY) as usize;
    members.until_acked(ctx.t.wait, n).await?;
    let got = members.finish(ctx.t).await?;
    exactly_once(&got, (0..KEYS).flat_map(|k| (0..PER_KEY).map(move |i| k * 1000 + i)), "ordered queue")?;
    let mut per_key: BTreeMap<u32, Vec<(u32, bool)>> = BTreeMap::new();
    for g in &got {
        let k = g.seq / 1000;
        ensure!(
            g.key.as_deref() == Some(format!("k{k}").as_str()),
            "message {} lost its key: {:?}",
            g.seq,
            g.key
        );
        per_key.entry(k).or_default().push((g.seq % 1000, g.acked));
    }
    for (k, seen) in per_key {
        let want: Vec<(u32, bool)> = (0..PER_KEY)
            .flat_map(|i| if nack_first(i) { vec![(i, false), (i, true)] } else { vec![(i, true)] })
            .collect();
        ensure!(
            seen == want,
            "key k{k}: handed out as (index, acked) {seen:?}, expected strictly in order with each nacked message \
             again right after itself: {want:?}"
        );
    }
    Ok(())
}

/// A nacked message comes back at once as attempt 2 with the same content; its neighbours,
/// acked, do not come back.
pub async fn resend_after_nack(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "resend_after_nack").await?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, ctx.queue("q")?).await?;
    let sent = ctx.msgs(0..3);
    ctx.publish(&topic, sent.clone()).await?;
    for d in recv_n(&mut sub, 3, ctx.t.wait).await? {
        ensure!(d.info().attempt == 1, "first delivery with attempt {}", d.info().attempt);
        if seq_of(d.message())? == 1 {
            d.nack(Nack::now().with_error("conformance")).await.context("nack")?;
        } else {
            d.ack().await.context("ack")?;
        }
    }
    let again = recv(&mut sub, ctx.t.wait).await.context("the nacked message did not come back")?;
    ensure!(
        seq_of(again.message())? == 1,
        "expected the nacked message 1 again, got {}",
        seq_of(again.message())?
    );
    ensure!(again.info().attempt == 2, "redelivery after one nack has attempt {}", again.info().attempt);
    ensure!(again.message() == &sent[1], "the redelivered message differs from the one published");
    again.ack().await.context("ack of the redelivery")?;
    expect_nothing(&mut sub, ctx.t.quiet, "all three were acked").await?;
    Ok(())
}

/// A member with prefetch 3 never holds more than 3 unsettled deliveries: a fourth arrives
/// only when one is settled; everything is delivered once it keeps settling.
pub async fn back_pressure_prefetch(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "back_pressure_prefetch").await?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, ctx.queue("q")?.with_prefetch(3)).await?;
    const N: u32 = 12;
    ctx.publish(&topic, ctx.msgs(0..N)).await?;
    let mut held = recv_n(&mut sub, 3, ctx.t.wait).await?;
    expect_nothing(&mut sub, ctx.t.quiet * 2, "3 deliveries unsettled with prefetch 3").await?;
    let mut acked = Vec::new();
    let first = held.remove(0);
    acked.push(seq_of(first.message())?);
    first.ack().await?;
    held.push(recv(&mut sub, ctx.t.wait).await.context("after one ack, one more delivery")?);
    expect_nothing(&mut sub, ctx.t.quiet, "3 unsettled again after one ack and one delivery").await?;
    let nacked = held.remove(0);
    nacked.nack(Nack::now()).await?;
    held.push(recv(&mut sub, ctx.t.wait).await.context("after a nack, one more delivery")?);
    expect_nothing(&mut sub, ctx.t.quiet, "3 unsettled again after one nack and one delivery").await?;
    for d in held.drain(..) {
        acked.push(seq_of(d.message())?);
        d.ack().await?;
    }
    while acked.len() < N as usize {
        let mut batch = Vec::new();
        while batch.len() < 3 && acked.len() + batch.len() < N as usize {
            batch.push(
                recv(&mut sub, ctx.t.wait).await.with_context(|| format!("{} of {N} acked", acked.len()))?,
            );
        }
        for d in batch {
            acked.push(seq_of(d.message())?);
            d.ack().await?;
        }
    }
    expect_nothing(&mut sub, ctx.t.quiet, "everything acked").await?;
    acked.sort_unstable();
    ensure!(acked == (0..N).collect::<Vec<_>>(), "acked {acked:?}, expected each of 0..{N} once");
    Ok(())
}

/// Three members nack every third message on its first attempt and every ninth on its second
/// too: all messages end up acked exactly once, each at exactly the expected attempt.
pub async fn continue_after_errors(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "continue_after_errors").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.queue("q")?.with_max_deliveries(Some(5));
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(ctx.subscribe(&topic, spec.clone()).await?);
    }
    let expected_attempt = |s: u32| {
        if s.is_multiple_of(9) {
            3
        } else if s.is_multiple_of(3) {
            2
        } else {
            1
        }
    };
    let policy: Policy = Arc::new(move |g: &Got| {
        if g.attempt < expected_attempt(g.seq) {
            Action::Nack(Nack::now().with_error(format!("conformance: attempt {} fails", g.attempt)))
        } else {
            Action::Ack
        }
    });
    let mut members = spawn_members(subs, policy, Duration::from_millis(1));
    const N: u32 = 90;
    ctx.publish(&topic, ctx.msgs(0..N)).await?;
    members.until_acked(ctx.t.wait, N as usize).await?;
    let got = members.finish(ctx.t).await?;
    exactly_once(&got, 0..N, "after errors")?;
    for g in got.iter().filter(|g| g.acked) {
        ensure!(
            g.attempt == expected_attempt(g.seq),
            "message {} acked at attempt {}, expected {}",
            g.seq,
            g.attempt,
            expected_attempt(g.seq)
        );
    }
    let nacks = got.iter().filter(|g| !g.acked).count();
    let want_nacks: u32 = (0..N).map(|s| expected_attempt(s) - 1).sum();
    ensure!(nacks == want_nacks as usize, "{nacks} deliveries were nacked, expected exactly {want_nacks}");
    Ok(())
}

/// Two queue subscriptions on one topic (2 and 3 members) and, where streams exist, a stream
/// subscription: each subscription gets every message exactly once, split among its members.
pub async fn consumer_groups(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "consumer_groups").await?;
    let topic = ctx.topic("t")?;
    let mut groups = Vec::new();
    for (name, members) in [("billing", 2), ("shipping", 3)] {
        let spec = ctx.queue(name)?;
        let mut subs = Vec::new();
        for _ in 0..members {
            let conn = ctx.connect().await?;
            subs.push(subscribe_on(&conn, ctx.t, &topic, spec.clone()).await?);
        }
        groups.push((name, spawn_members(subs, ack_all(), Duration::from_millis(1))));
    }
    if ctx.caps.contains(Capability::Stream) {
        let sub = ctx.subscribe(&topic, ctx.stream("audit")?).await?;
        groups.push(("audit", spawn_members(vec![sub], ack_all(), Duration::ZERO)));
    }
    const N: u32 = 80;
    for chunk in (0..N).collect::<Vec<_>>().chunks(8) {
        ctx.publish(&topic, ctx.msgs(chunk.iter().copied())).await?;
    }
    let t = ctx.t;
    let results = futures::future::join_all(groups.into_iter().map(|(name, mut g)| async move {
        g.until_acked(t.wait, N as usize).await.with_context(|| format!("subscription {name}"))?;
        anyhow::Ok((name, g.finish(t).await?))
    }))
    .await;
    for r in results {
        let (name, got) = r?;
        exactly_once(&got, 0..N, &format!("subscription {name}"))?;
        all_first_attempts(&got, &format!("subscription {name}"))?;
    }
    Ok(())
}

/// A consumer that takes deliveries and stalls (never settles): after the lease (not before)
/// they come back with attempt ≥ 2; the stalled consumer's late ack fails with `LeaseLost`
/// and the redelivery's ack succeeds.
pub async fn lease_expiry_redelivers(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "lease_expiry_redelivers").await?;
    let topic = ctx.topic("t")?;
    let lease = ctx.t.short_lease;
    let mut sub = ctx.subscribe(&topic, ctx.queue("q")?.with_lease(lease).with_max_deliveries(None)).await?;
    let published = Instant::now();
    ctx.publish(&topic, ctx.msgs(0..2)).await?;
    let mut stalled = BTreeMap::new();
    for d in recv_n(&mut sub, 2, ctx.t.wait).await? {
        let (m, info, settle) = d.into_parts();
        ensure!(info.attempt == 1, "first delivery has attempt {}", info.attempt);
        stalled.insert(seq_of(&m)?, settle);
    }
    let mut again = BTreeMap::new();
    for _ in 0..2 {
        let d = recv(&mut sub, ctx.t.wait)
            .await
            .context("a stalled delivery did not come back after its lease")?;
        let since = published.elapsed();
        ensure!(
            since + ctx.t.clock_slack >= lease,
            "redelivered {since:?} after publishing, before its {lease:?} lease could have run out"
        );
        ensure!(d.info().attempt >= 2, "redelivery after lease expiry has attempt {}", d.info().attempt);
        let seq = seq_of(d.message())?;
        ensure!(
            again.insert(seq, d).is_none(),
            "message {seq} redelivered twice while the redelivery was held"
        );
    }
    ensure!(again.keys().eq(stalled.keys()), "redelivered {:?}, stalled {:?}", again.keys(), stalled.keys());
    for (seq, settle) in stalled {
        expect_err(settle.ack().await, &format!("late ack of message {seq}"), "LeaseLost", |e| {
            matches!(e, BusError::LeaseLost { .. })
        })?;
    }
    for (seq, d) in again {
        d.ack().await.with_context(|| format!("ack of redelivered message {seq}"))?;
    }
    expect_nothing(&mut sub, lease + ctx.t.quiet, "the redeliveries were acked").await?;
    Ok(())
}

/// A slow handler extends its lease repeatedly: the message is not redelivered during
/// three times the original lease, and the final ack succeeds.
pub async fn lease_extension(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "lease_extension").await?;
    let topic = ctx.topic("t")?;
    let lease = ctx.t.short_lease;
    let mut sub = ctx.subscribe(&topic, ctx.queue("q")?.with_lease(lease).with_max_deliveries(None)).await?;
    ctx.publish(&topic, ctx.msgs(0..1)).await?;
    let d = recv(&mut sub, ctx.t.wait).await?;
    let extender = async {
        for _ in 0..6 {
            tokio::time::sleep(lease / 2).await;
            d.extend(lease).await.context("extend")?;
        }
        anyhow::Ok(())
    };
    let (ext, watch) =
        tokio::join!(extender, expect_nothing(&mut sub, lease * 3, "the lease was extended in time"));
    ext?;
    watch?;
    d.ack().await.context("ack after extending")?;
    expect_nothing(&mut sub, lease + ctx.t.quiet, "acked after extending").await?;
    Ok(())
}

/// A delivery dropped without ack or nack (a cancelled handler), whole or split with
/// `into_parts`, is delivered again with attempt 2.
pub async fn drop_unsettled_delivery(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "drop_unsettled_delivery").await?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx
        .subscribe(&topic, ctx.queue("q")?.with_lease(ctx.t.short_lease).with_max_deliveries(None))
        .await?;
    ctx.publish(&topic, ctx.msgs(0..2)).await?;
    let mut first = recv_n(&mut sub, 2, ctx.t.wait).await?;
    let split = first.pop().context("two deliveries")?;
    let whole = first.pop().context("two deliveries")?;
    let mut seqs = vec![seq_of(whole.message())?, seq_of(split.message())?];
    drop(whole);
    let (_, _, settled) = split.into_parts();
    drop(settled);
    let mut again = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut sub, ctx.t.wait).await.context("a dropped delivery did not come back")?;
        ensure!(d.info().attempt == 2, "redelivery of a dropped delivery has attempt {}", d.info().attempt);
        again.push(seq_of(d.message())?);
        d.ack().await?;
    }
    seqs.sort_unstable();
    again.sort_unstable();
    if seqs != again {
        bail!("dropped {seqs:?} but {again:?} came back");
    }
    expect_nothing(&mut sub, ctx.t.short_lease + ctx.t.quiet, "both were acked").await?;
    Ok(())
}
