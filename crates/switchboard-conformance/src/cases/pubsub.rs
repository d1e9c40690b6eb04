//! Publishing and receiving: what a message carries, fan-out, topic isolation, flush.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use switchboard_core::Message;

use crate::Harness;
use crate::util::{
    Ctx, Members, ack_all, all_first_attempts, exactly_once, expect_nothing, publish_on, recv, spawn_members,
    subscribe_on, within,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// Field-by-field differences between what was sent and what arrived.
fn diff(sent: &Message, got: &Message) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug, same: bool| {
        if !same {
            out.push(format!("{name}: sent {a:?}, got {b:?}"));
        }
    };
    field("id", &sent.id, &got.id, sent.id == got.id);
    field("source", &sent.source, &got.source, sent.source == got.source);
    field("type", &sent.ty, &got.ty, sent.ty == got.ty);
    field("specversion", &sent.specversion, &got.specversion, sent.specversion == got.specversion);
    field("subject", &sent.subject, &got.subject, sent.subject == got.subject);
    // CloudEvents `time` is a Timestamp: the instant must survive, its offset need not (the
    // protobuf format carries none, so `switchboard://` hands it back in UTC).
    let instant = |t: &Option<String>| t.as_deref().map(switchboard_core::Timestamp::parse_rfc3339);
    field("time", &sent.time, &got.time, sent.time == got.time || instant(&sent.time) == instant(&got.time));
    field(
        "datacontenttype",
        &sent.datacontenttype,
        &got.datacontenttype,
        sent.datacontenttype == got.datacontenttype,
    );
    field("dataschema", &sent.dataschema, &got.dataschema, sent.dataschema == got.dataschema);
    field("extensions", &sent.extensions, &got.extensions, sent.extensions == got.extensions);
    if sent.data != got.data {
        out.push(format!("data: sent {} bytes, got {} bytes (differs)", sent.data.len(), got.data.len()));
    }
    out
}

/// Every CloudEvents attribute, every extension and binary data (all 256 byte values, empty,
/// 64 KiB) arrive exactly as published, with topic, subscription and attempt 1 in the
/// delivery info; optional attributes left out stay absent.
pub async fn publish_subscribe_metadata(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "publish_subscribe_metadata").await?;
    let spec = ctx.any_mode("s")?.context("needs queue or stream")?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, spec.clone()).await?;

    let mut sent = Vec::new();
    for i in 0..16u32 {
        let data = match i {
            0 => Bytes::from((0..=255u8).collect::<Vec<u8>>()),
            1 => Bytes::new(),
            2 => Bytes::from(vec![0xA5u8; 64 * 1024]),
            _ => Bytes::from(format!("{{\"n\":{i},\"text\":\"grüße ✓\"}}")),
        };
        let mut m = Message::new(format!("/conformance/source/{i}"), "com.example.conformance.full", data)
            .with_id(format!("{}-{i}", ctx.prefix));
        if i % 2 == 0 {
            m = m
                .with_subject(format!("orders/{i}"))
                .with_content_type("application/octet-stream")
                .with_key(format!("key-{}", i % 3))
                .with_extension("traceparent", TRACEPARENT)
                .with_extension("tracestate", TRACESTATE)
                .with_extension("cfint", i.to_string())
                .with_extension("cfunicode", "ünïcødé ✓ spaces and = , ; : signs")
                .with_extension("cf0digits9", "x");
            m.time = Some("2026-11-26T10:00:00.123456789+01:00".into());
            m.dataschema = Some("https://example.com/schemas/order/v1.json".into());
        }
        sent.push(m);
    }
    let (batch, singles) = sent.split_at(8);
    ctx.publish(&topic, batch.to_vec()).await?;
    for m in singles {
        ctx.publish(&topic, vec![m.clone()]).await?;
    }

    let mut want: BTreeMap<String, Message> = sent.into_iter().map(|m| (m.id.clone(), m)).collect();
    while !want.is_empty() {
        let d = recv(&mut sub, ctx.t.wait)
            .await
            .with_context(|| format!("{} messages not received", want.len()))?;
        let (msg, info) = (d.message().clone(), d.info().clone());
        let sent =
            want.remove(&msg.id).with_context(|| format!("unexpected or repeated message id {}", msg.id))?;
        let changes = diff(&sent, &msg);
        ensure!(changes.is_empty(), "message {} changed in transit: {}", msg.id, changes.join("; "));
        ensure!(info.topic == topic, "delivery info topic {} != {topic}", info.topic);
        ensure!(
            info.subscription == spec.name,
            "delivery info subscription {} != {}",
            info.subscription,
            spec.name
        );
        ensure!(info.attempt == 1, "first delivery of {} has attempt {}", msg.id, info.attempt);
        d.ack().await.context("ack")?;
    }
    expect_nothing(&mut sub, ctx.t.quiet, "every message was received and acked").await?;
    Ok(())
}

/// W3C trace context (`traceparent`, `tracestate`) survives the round trip unchanged, and a
/// message published without it arrives without it.
pub async fn trace_context_round_trip(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "trace_context_round_trip").await?;
    let spec = ctx.any_mode("s")?.context("needs queue or stream")?;
    let topic = ctx.topic("t")?;
    let mut sub = ctx.subscribe(&topic, spec).await?;
    let with_both =
        ctx.msg(0).with_extension("traceparent", TRACEPARENT).with_extension("tracestate", TRACESTATE);
    let parent_only =
        ctx.msg(1).with_extension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    let without = ctx.msg(2);
    let sent = vec![with_both, parent_only, without];
    ctx.publish(&topic, sent.clone()).await?;
    let mut want: BTreeMap<String, Message> = sent.into_iter().map(|m| (m.id.clone(), m)).collect();
    while !want.is_empty() {
        let d = recv(&mut sub, ctx.t.wait).await?;
        let m = d.message().clone();
        let s = want.remove(&m.id).with_context(|| format!("unexpected or repeated message id {}", m.id))?;
        for ext in ["traceparent", "tracestate"] {
            ensure!(
                s.extensions.get(ext) == m.extensions.get(ext),
                "{ext} of message {}: sent {:?}, got {:?}",
                m.id,
                s.extensions.get(ext),
                m.extensions.get(ext)
            );
        }
        d.ack().await?;
    }
    Ok(())
}

/// Several subscriptions on one topic, each on its own connection, each get every message
/// exactly once while three publishers publish concurrently.
pub async fn fan_out_concurrent_subscribers(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "fan_out_concurrent_subscribers").await?;
    let topic = ctx.topic("t")?;
    const SUBS: usize = 4;
    const N: u32 = 60;
    let mut groups: Vec<Members> = Vec::new();
    let mut conns = Vec::new();
    for i in 0..SUBS {
        let conn = ctx.connect().await?;
        let spec = ctx.any_mode(&format!("s{i}"))?.context("mode")?;
        let sub = subscribe_on(&conn, ctx.t, &topic, spec).await?;
        groups.push(spawn_members(vec![sub], ack_all(), std::time::Duration::ZERO));
        conns.push(conn);
    }
    let mut publishers = Vec::new();
    for p in 0..3u32 {
        let conn = ctx.connect().await?;
        let msgs = ctx.msgs((0..N).filter(|s| s % 3 == p));
        let (t, topic) = (ctx.t, topic.clone());
        publishers.push(tokio::spawn(async move {
            for m in msgs {
                publish_on(&conn, t, &topic, vec![m]).await?;
            }
            anyhow::Ok(())
        }));
    }
    for p in publishers {
        p.await??;
    }
    let results = futures::future::join_all(groups.into_iter().enumerate().map(|(i, mut g)| {
        let t = ctx.t;
        async move {
            g.until_acked(t.wait, N as usize).await.with_context(|| format!("subscription s{i}"))?;
            g.finish(t).await
        }
    }))
    .await;
    for (i, got) in results.into_iter().enumerate() {
        let got = got?;
        exactly_once(&got, 0..N, &format!("subscription s{i}"))?;
        all_first_attempts(&got, &format!("subscription s{i}"))?;
    }
    Ok(())
}

/// Messages of one topic never show on another, including topics whose names extend each
/// other with `.` or `-` (a wildcard or prefix mapping of names to broker subjects would leak).
pub async fn topic_isolation(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "topic_isolation").await?;
    let suffixes = ["iso", "iso.a", "iso-a", "isoa", "iso.a.b", "iso_a"];
    let mut groups = Vec::new();
    for (k, suffix) in suffixes.iter().enumerate() {
        let topic = ctx.topic(suffix)?;
        let spec = ctx.any_mode(&format!("s{k}"))?.context("mode")?;
        let sub = ctx.subscribe(&topic, spec).await?;
        groups.push((topic, spawn_members(vec![sub], ack_all(), std::time::Duration::ZERO)));
    }
    let range = |k: usize| (k as u32 * 100)..(k as u32 * 100 + 3 + k as u32);
    for (k, (topic, _)) in groups.iter().enumerate() {
        ctx.publish(topic, ctx.msgs(range(k))).await?;
    }
    for (k, (topic, mut g)) in groups.into_iter().enumerate() {
        g.until_acked(ctx.t.wait, range(k).len()).await.with_context(|| format!("topic {topic}"))?;
        let got = g.finish(ctx.t).await?;
        exactly_once(&got, range(k), &format!("topic {topic}"))?;
    }
    Ok(())
}

/// Many publishes in flight at once, then `flush`: every publish is confirmed and every
/// confirmed message is received exactly once; a flush with nothing pending returns.
pub async fn publisher_flush(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "publisher_flush").await?;
    let spec = ctx.any_mode("s")?.context("needs queue or stream")?;
    let topic = ctx.topic("t")?;
    let sub = ctx.subscribe(&topic, spec).await?;
    let mut members = spawn_members(vec![sub], ack_all(), std::time::Duration::ZERO);
    const N: u32 = 100;
    let conn = ctx.connect().await?;
    let tasks: Vec<_> = (0..N)
        .map(|s| {
            let (conn, topic, m, t) = (conn.clone(), topic.clone(), ctx.msg(s), ctx.t);
            tokio::spawn(async move { publish_on(&conn, t, &topic, vec![m]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    within(ctx.t.wait, "flush with publishes in flight", conn.flush()).await?;
    for (s, task) in tasks.into_iter().enumerate() {
        task.await?.with_context(|| format!("publish of message {s}"))?;
    }
    within(ctx.t.wait, "flush with nothing pending", conn.flush()).await?;
    members.until_acked(ctx.t.wait, N as usize).await?;
    let got = members.finish(ctx.t).await?;
    exactly_once(&got, 0..N, "flushed publishes")?;
    Ok(())
}
