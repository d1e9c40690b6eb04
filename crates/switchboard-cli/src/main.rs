//! `switchboard`: the command-line entry point.
//!
//! `serve` runs the server; `demo` runs the main job end to end on the embedded broker; the
//! data-directory commands inspect and feed an embedded broker directly.

mod serve;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_broker::{Broker, PublishOptions, SeekTo, SubscriptionConfig, TopicConfig};
use switchboard_core::{Message, SubscriptionName, TopicName};

#[derive(Parser)]
#[command(name = "switchboard", version, about = "One broker for queues and logs.")]
struct Cli {
    /// Data directory of the embedded broker [default: ./data].
    #[arg(long, global = true, env = "SWITCHBOARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the broker server: gRPC, REST (CloudEvents), GraphQL, /metrics.
    Serve(serve::ServeArgs),
    /// Creates an `orders` topic with a queue and a stream subscription, publishes messages,
    /// consumes them both ways, and prints what happened.
    Demo {
        /// Messages to publish.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
    },
    /// Lists topics with their partitions and subscriptions.
    Topics,
    /// Publishes one message (data from the argument).
    Publish {
        /// Topic (created with defaults if missing).
        topic: String,
        /// Message data.
        data: String,
        /// Partition key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Receives and acks messages from a queue subscription (created if missing).
    Consume {
        /// Topic.
        topic: String,
        /// Subscription.
        subscription: String,
        /// Most messages to take.
        #[arg(long, default_value_t = 10)]
        max: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    if let Command::Serve(args) = cli.command {
        return serve::run(args, cli.data_dir).await;
    }
    let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    let broker = Broker::open(&data_dir)
        .await
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let result = run(&broker, cli.command).await;
    broker.close().await?;
    result
}

async fn run(broker: &Broker, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => unreachable!("handled in main"),
        Command::Demo { messages } => demo(broker, messages).await,
        Command::Topics => {
            for t in broker.topics() {
                let size: u64 = t.partitions.iter().map(|p| p.size_bytes).sum();
                let count: u64 = t.partitions.iter().map(|p| p.end_offset - p.start_offset).sum();
                println!("{}  partitions={} messages={count} bytes={size}", t.name, t.partitions.len());
                for (s, c) in &t.subscriptions {
                    let st = broker.stats(&t.name, s)?;
                    println!(
                        "  {s} ({:?})  backlog={} in_flight={} lag={} dead_lettered={}",
                        c.mode, st.backlog, st.in_flight, st.lag, st.dead_lettered
                    );
                }
            }
            Ok(())
        }
        Command::Publish { topic, data, key } => {
            let topic = TopicName::new(topic)?;
            ensure_topic(broker, &topic, TopicConfig::default()).await?;
            let mut msg = Message::new("/switchboard/cli", "cli.message", data.into_bytes());
            if let Some(k) = key {
                msg = msg.with_key(k);
            }
            let r = broker.publish(&topic, msg).await?;
            println!("published partition={} offset={} durability={:?}", r.partition, r.offset, r.durability);
            Ok(())
        }
        Command::Consume { topic, subscription, max } => {
            let topic = TopicName::new(topic)?;
            let sub = SubscriptionName::new(subscription)?;
            broker.create_subscription(&topic, &sub, SubscriptionConfig::queue()).await?;
            let consumer = broker.queue_consumer(&topic, &sub)?;
            let got = consumer.receive(max, Duration::from_millis(200)).await?;
            for d in &got {
                println!(
                    "{}/{} attempt={} id={} data={}",
                    d.partition,
                    d.offset,
                    d.attempt,
                    d.message.id,
                    String::from_utf8_lossy(&d.message.data)
                );
            }
            let receipts: Vec<_> = got.iter().filter_map(|d| d.receipt).collect();
            consumer.ack_many(&receipts).await?.into_iter().collect::<Result<Vec<_>, _>>()?;
            println!("acked {}", receipts.len());
            Ok(())
        }
    }
}

/// Creates `topic` with `config` unless it exists (whatever its settings).
async fn ensure_topic(broker: &Broker, topic: &TopicName, config: TopicConfig) -> anyhow::Result<()> {
    if broker.topic_info(topic).is_err() {
        broker.create_topic(topic, config).await?;
    }
    Ok(())
}

async fn demo(broker: &Broker, messages: usize) -> anyhow::Result<()> {
    let orders = TopicName::new("orders")?;
    let shipping = SubscriptionName::new("shipping")?;
    let email = SubscriptionName::new("email")?;
    ensure_topic(broker, &orders, TopicConfig { partitions: 4, ..TopicConfig::default() }).await?;
    broker.create_subscription(&orders, &email, SubscriptionConfig::queue()).await?;
    broker.create_subscription(&orders, &shipping, SubscriptionConfig::stream()).await?;
    println!(
        "data dir holds topic `orders` with a queue subscription `email` and a stream subscription `shipping`"
    );

    let started = Instant::now();
    let mut published = 0;
    while published < messages {
        let n = (messages - published).min(500);
        let batch = (published..published + n)
            .map(|i| {
                Message::new("/shop/order", "order.created", format!(r#"{{"order":{i}}}"#))
                    .with_key(format!("customer-{}", i % 97))
            })
            .collect();
        broker.publish_batch(&orders, batch, PublishOptions::default()).await?;
        published += n;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published {published} messages (fsync always, batches of 500) in {secs:.2}s: {:.0} msgs/s",
        published as f64 / secs
    );

    let consumer = broker.queue_consumer(&orders, &email)?;
    let started = Instant::now();
    let mut acked = 0;
    loop {
        let got = consumer.receive(1000, Duration::from_millis(50)).await?;
        if got.is_empty() {
            break;
        }
        let receipts: Vec<_> = got.iter().filter_map(|d| d.receipt).collect();
        consumer.ack_many(&receipts).await?.into_iter().collect::<Result<Vec<_>, _>>()?;
        acked += receipts.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "queue `email`: received and acked {acked} messages in {secs:.2}s: {:.0} msgs/s",
        acked as f64 / secs
    );

    let reader = broker.stream_consumer(&orders, &shipping)?;
    let mut read = 0;
    loop {
        let got = reader.receive(5000, Duration::from_millis(50)).await?;
        if got.is_empty() {
            break;
        }
        let mut next: std::collections::BTreeMap<u32, u64> = Default::default();
        for d in &got {
            next.insert(d.partition, d.offset + 1);
        }
        for (p, o) in next {
            reader.commit(p, o).await?;
        }
        read += got.len();
    }
    println!("stream `shipping`: read {read} messages in partition order and committed");
    broker.seek(&orders, &shipping, SeekTo::Earliest).await?;
    println!("stream `shipping`: rewound to the earliest offset; it can replay the log at will");
    for s in [&email, &shipping] {
        let st = broker.stats(&orders, s)?;
        println!(
            "{s}: backlog={} in_flight={} lag={} dead_lettered={}",
            st.backlog, st.in_flight, st.lag, st.dead_lettered
        );
    }
    Ok(())
}
