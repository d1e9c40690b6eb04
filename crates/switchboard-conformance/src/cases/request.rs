//! Request/reply over messaging (the SDK's `Bus::request`), on the backend under test: the
//! same reply-topic mechanism has to work wherever the SDK runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use switchboard::Bus;
use switchboard::request::{CORRELATION_ID, reply_to};
use switchboard_core::contract::{BusError, Capability};
use switchboard_core::{Message, SubscriptionName};

use crate::Harness;
use crate::util::Ctx;

/// Concurrent requests each get their own reply; a request nobody answers times out with
/// [`BusError::Timeout`]; a late reply to it is dropped, and the next request still works;
/// closing the client deletes its reply topic.
pub async fn request_reply(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "request_reply").await?;
    let service = ctx.topic("svc")?;
    let silent = ctx.topic("silent")?;
    let spec = ctx.any_mode("responder")?.context("needs queue or stream")?;
    let mut requests = ctx.subscribe(&service, spec).await?;
    let responder_bus = ctx.bus.clone();
    // Answers each request with its data doubled; holds the first "slow" one back until
    // its requester gave up, then answers it (late).
    let responder = tokio::spawn(async move {
        while let Some(Ok(delivery)) = requests.next().await {
            let request = delivery.message().clone();
            let text = String::from_utf8_lossy(&request.data).into_owned();
            if text == "slow" {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            let answer = Message::new("/conformance/responder", "conformance.reply", format!("{text}{text}"));
            if let Ok((topic, reply)) = reply_to(&request, answer) {
                let _ = responder_bus.publish(&topic, vec![reply], &Default::default()).await;
            }
            let _ = delivery.ack().await;
        }
    });

    let client = Bus::from_backend(ctx.connect().await?);
    let wait = ctx.t.wait;
    let calls = (0..5).map(|i| {
        let client = client.clone();
        let service = service.clone();
        async move {
            let request = Message::new("/conformance/client", "conformance.request", format!("r{i}"));
            let id = request.id.clone();
            let reply =
                client.request(&service, request, wait).await.with_context(|| format!("request r{i}"))?;
            ensure!(reply.data == format!("r{i}r{i}").as_bytes(), "request r{i} got {:?}", reply.data);
            ensure!(
                reply.extensions.get(CORRELATION_ID) == Some(&id),
                "reply to r{i} carries correlation {:?}, expected {id}",
                reply.extensions.get(CORRELATION_ID)
            );
            Ok(())
        }
    });
    for result in futures::future::join_all(calls).await {
        result?;
    }

    let nobody = Message::new("/conformance/client", "conformance.request", "anyone?");
    match client.request(&silent, nobody, Duration::from_millis(300)).await {
        Err(BusError::Timeout { after, .. }) => ensure!(after == Duration::from_millis(300)),
        other => bail!("a request nobody answers should time out, got {other:?}"),
    }
    let slow = Message::new("/conformance/client", "conformance.request", "slow");
    match client.request(&service, slow, Duration::from_millis(200)).await {
        Err(BusError::Timeout { .. }) => {}
        other => bail!("a reply later than the timeout should time out, got {other:?}"),
    }
    // The late reply arrives while this request waits: it must not be taken for this one.
    let next = Message::new("/conformance/client", "conformance.request", "after");
    let reply = client.request(&service, next, wait).await.context("the request after a late reply")?;
    ensure!(reply.data == "afterafter".as_bytes(), "the request after a late reply got {:?}", reply.data);

    let reply_topic = client.reply_topic().context("the client has a reply topic")?.clone();
    // A harness whose connections are one handle (the embedded broker in this process)
    // closes the broker with the client; there is nothing left to ask afterwards.
    let shared_handle = Arc::ptr_eq(&ctx.bus, client.backend());
    client.close().await.context("close")?;
    if ctx.caps.contains(Capability::Stats) && !shared_handle {
        let name = SubscriptionName::from_static("client");
        // A connection of its own: on the embedded backend closing the client closed the
        // handle the case shares with it.
        let checker = ctx.connect().await?;
        match checker.stats(&reply_topic, &name).await {
            Err(BusError::NotFound { .. }) => {}
            other => bail!("the reply topic {reply_topic} should be gone after close, stats said {other:?}"),
        }
    }
    responder.abort();
    Ok(())
}
