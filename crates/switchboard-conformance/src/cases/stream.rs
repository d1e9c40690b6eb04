//! Stream subscriptions: order per partition, resuming at the committed offset, replay,
//! members splitting partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use switchboard_core::contract::{Capability, Start};

use crate::Harness;
use crate::util::{
    Ctx, Got, ack_all, exactly_once, expect_nothing, publish_on, recv, recv_n, seq_of, spawn_members,
    subscribe_on,
};

/// Checks stream order: per partition offsets strictly increase, per key the sequence
/// increases, and a key stays on one partition.
fn check_stream_order(got: &[Got], partitions: u32) -> Result<()> {
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_seq: BTreeMap<String, u32> = BTreeMap::new();
    let mut key_partition: BTreeMap<String, u32> = BTreeMap::new();
    for g in got {
        ensure!(g.partition < partitions, "message {} on partition {} of {partitions}", g.seq, g.partition);
        if let Some(prev) = last_offset.insert(g.partition, g.offset) {
            ensure!(
                prev < g.offset,
                "partition {}: offset {} delivered after offset {prev}",
                g.partition,
                g.offset
            );
        }
        if let Some(key) = &g.key {
            if let Some(prev) = last_seq.insert(key.clone(), g.seq) {
                ensure!(prev < g.seq, "key {key}: message {} delivered after message {prev}", g.seq);
            }
            let p = *key_partition.entry(key.clone()).or_insert(g.partition);
            ensure!(p == g.partition, "key {key} seen on partitions {p} and {}", g.partition);
        }
    }
    Ok(())
}

/// A stream subscription on a 3-partition topic, keys published concurrently in batches:
/// every message exactly once, offsets increasing per partition, each key on one partition
/// and in publish order.
pub async fn stream_order(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "stream_order").await?;
    let topic = ctx.topic("t")?;
    ctx.ensure_partitions(&topic, 3).await?;
    let sub = ctx.subscribe(&topic, ctx.stream("log")?).await?;
    let mut members = spawn_members(vec![sub], ack_all(), Duration::ZERO);
    const KEYS: u32 = 5;
    const PER_KEY: u32 = 30;
    let publishers: Vec<_> = (0..KEYS)
        .map(|k| {
            let msgs: Vec<_> =
                (0..PER_KEY).map(|i| ctx.msg(k * 1000 + i).with_key(format!("k{k}"))).collect();
            let (bus, topic, t) = (ctx.bus.clone(), topic.clone(), ctx.t);
            tokio::spawn(async move {
                for batch in msgs.chunks(6) {
                    publish_on(&bus, t, &topic, batch.to_vec()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for p in publishers {
        p.await??;
    }
    members.until_acked(ctx.t.wait, (KEYS * PER_KEY) as usize).await?;
    let got = members.finish(ctx.t).await?;
    exactly_once(&got, (0..KEYS).flat_map(|k| (0..PER_KEY).map(move |i| k * 1000 + i)), "stream")?;
    check_stream_order(&got, 3)?;
    Ok(())
}

/// A stream subscription acks (commits) 0..10, receives 10..15 without acking and is closed;
/// reopened, it resumes exactly at 10 and then reads on in order.
pub async fn stream_resume_after_restart(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "stream_resume_after_restart").await?;
    let topic = ctx.topic("t")?;
    let spec = ctx.stream("log")?;
    let mut sub = ctx.subscribe(&topic, spec.clone()).await?;
    const N: u32 = 40;
    ctx.publish(&topic, ctx.msgs(0..N)).await?;
    let mut unacked = Vec::new();
    for (i, d) in recv_n(&mut sub, 15, ctx.t.wait).await?.into_iter().enumerate() {
        let seq = seq_of(d.message())?;
        ensure!(seq == i as u32, "stream delivered {seq} at position {i}");
        if i < 10 {
            d.ack().await.with_context(|| format!("ack (commit) of {seq}"))?;
        } else {
            unacked.push(d);
        }
    }
    tokio::time::timeout(ctx.t.wait, sub.close()).await.context("close hung")?.context("close")?;
    drop(unacked);
    let conn = ctx.connect().await?;
    let mut sub = subscribe_on(&conn, ctx.t, &topic, spec).await?;
    for want in 10..N {
        let d = recv(&mut sub, ctx.t.wait)
            .await
            .with_context(|| format!("waiting for {want} after reopening"))?;
        let seq = seq_of(d.message())?;
        ensure!(seq == want, "after reopening (committed up to 9) expected {want}, got {seq}");
        d.ack().await?;
    }
    expect_nothing(&mut sub, ctx.t.quiet, "read to the end").await?;
    Ok(())
}

/// A stream subscription created after messages were published, starting at `Earliest`,
/// gets them all from the start in order, then new ones; so does a second one created later;
/// a new queue subscription starting at `Earliest` (where queues exist) gets them too.
pub async fn replay_old_messages(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "replay_old_messages").await?;
    let topic = ctx.topic("t")?;
    ctx.publish(&topic, ctx.msgs(0..25)).await?;
    let mut first = ctx.subscribe(&topic, ctx.stream("late")?.with_start(Start::Earliest)).await?;
    for want in 0..25 {
        let d = recv(&mut first, ctx.t.wait).await.with_context(|| format!("replaying message {want}"))?;
        ensure!(
            seq_of(d.message())? == want,
            "replay delivered {} where {want} was due",
            seq_of(d.message())?
        );
        d.ack().await?;
    }
    ctx.publish(&topic, ctx.msgs(25..30)).await?;
    for want in 25..30 {
        let d = recv(&mut first, ctx.t.wait).await?;
        ensure!(seq_of(d.message())? == want, "got {} where {want} was due", seq_of(d.message())?);
        d.ack().await?;
    }
    expect_nothing(&mut first, ctx.t.quiet, "read to the end").await?;
    let mut second = ctx.subscribe(&topic, ctx.stream("later")?.with_start(Start::Earliest)).await?;
    for want in 0..30 {
        let d = recv(&mut second, ctx.t.wait).await?;
        ensure!(
            seq_of(d.message())? == want,
            "second replay: got {} where {want} was due",
            seq_of(d.message())?
        );
        d.ack().await?;
    }
    if ctx.caps.contains(Capability::Queue) && ctx.caps.contains(Capability::QueueReplay) {
        let mut q = ctx.subscribe(&topic, ctx.queue("queue")?.with_start(Start::Earliest)).await?;
        let mut seen = BTreeSet::new();
        for d in recv_n(&mut q, 30, ctx.t.wait).await.context("queue subscription starting at Earliest")? {
            ensure!(
                seen.insert(seq_of(d.message())?),
                "queue replay delivered {} twice",
                seq_of(d.message())?
            );
            d.ack().await?;
        }
        ensure!(seen == (0..30).collect::<BTreeSet<_>>(), "queue replay got {seen:?}");
        expect_nothing(&mut q, ctx.t.quiet, "queue replay complete").await?;
    }
    Ok(())
}

/// Two members of one stream subscription on a 4-partition topic split the partitions: each
/// message goes to exactly one member, each partition to one member, both get some, order
/// holds per partition.
pub async fn stream_group_members_split(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "stream_group_members_split").await?;
    let topic = ctx.topic("t")?;
    ctx.ensure_partitions(&topic, 4).await?;
    let spec = ctx.stream("group")?;
    let mut subs = Vec::new();
    for _ in 0..2 {
        let conn = ctx.connect().await?;
        subs.push(subscribe_on(&conn, ctx.t, &topic, spec.clone()).await?);
    }
    let mut members = spawn_members(subs, ack_all(), Duration::from_millis(1));
    tokio::time::sleep(ctx.t.quiet).await;
    const N: u32 = 80;
    let msgs: Vec<_> = (0..N).map(|s| ctx.msg(s).with_key(format!("k{}", s % 16))).collect();
    for batch in msgs.chunks(10) {
        ctx.publish(&topic, batch.to_vec()).await?;
    }
    members.until_acked(ctx.t.wait, N as usize).await?;
    let got = members.finish(ctx.t).await?;
    exactly_once(&got, 0..N, "stream group")?;
    let mut owner: BTreeMap<u32, usize> = BTreeMap::new();
    for g in &got {
        let o = *owner.entry(g.partition).or_insert(g.member);
        ensure!(o == g.member, "partition {} delivered to members {o} and {}", g.partition, g.member);
    }
    let members_used: BTreeSet<usize> = owner.values().copied().collect();
    ensure!(members_used.len() == 2, "partitions by member {owner:?}: one member got every partition");
    for member in 0..2 {
        let mine: Vec<Got> = got.iter().filter(|g| g.member == member).cloned().collect();
        check_stream_order(&mine, 4)?;
    }
    Ok(())
}
