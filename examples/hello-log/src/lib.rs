//! Hello log: orders are published to a topic kept as a log; two services that start later
//! (billing and analytics) each replay every order from the start, in order, through their
//! own stream subscription. Unlike a queue, reading does not consume: each subscription has
//! its own cursor.

use std::time::Duration;

use anyhow::Context as _;
use switchboard::{Bus, Message, Start, SubscriptionName, SubscriptionSpec, TopicName};

/// The order numbers each service read, in the order it read them.
#[derive(Debug, Default)]
pub struct Report {
    /// Billing's reads.
    pub billing: Vec<u32>,
    /// Analytics' reads.
    pub analytics: Vec<u32>,
}

/// One service: reads `count` orders from the start of `topic` and acks (commits) each.
async fn replay(url: &str, topic: &TopicName, service: &str, count: usize) -> anyhow::Result<Vec<u32>> {
    let bus = Bus::connect(url).await.with_context(|| format!("connecting {service}"))?;
    let spec = SubscriptionSpec::stream(SubscriptionName::new(service)?).with_start(Start::Earliest);
    let mut sub = bus.subscribe(topic, spec).await?;
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .with_context(|| format!("{service} waited 30 s for order {}", seen.len()))?
            .context("subscription ended")??;
        seen.push(String::from_utf8_lossy(&delivery.message().data).parse()?);
        delivery.ack().await?;
    }
    sub.close().await?;
    bus.close().await?;
    Ok(seen)
}

/// Publishes `orders` orders, then runs both services concurrently.
///
/// # Errors
/// The broker is unreachable or a service does not get every order within 30 s.
pub async fn run(url: &str, topic: &str, orders: u32) -> anyhow::Result<Report> {
    let topic = &TopicName::new(topic)?;
    let shop = Bus::connect(url).await.context("connecting the shop")?;
    for n in 0..orders {
        let order =
            Message::new("/shop", "order.placed", n.to_string()).with_key(format!("customer-{}", n % 7));
        shop.publish(topic, order).await?;
    }
    shop.close().await?;
    let (billing, analytics) = tokio::try_join!(
        replay(url, topic, "billing", orders as usize),
        replay(url, topic, "analytics", orders as usize),
    )?;
    Ok(Report { billing, analytics })
}
