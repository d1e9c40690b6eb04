//! `switchboard`: the command-line entry point.
//!
//! `serve` runs the server; `demo` runs the main job end to end on the embedded broker; the
//! other commands talk to a running server over its REST API.

mod remote;
mod serve;
mod top;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_broker::{Broker, PublishOptions, SeekTo, SubscriptionConfig, TopicConfig};
use switchboard_core::{Message, SubscriptionName, TopicName};

// mimalloc: fewer page faults and faster small allocations than glibc's allocator on the
// broker's read and publish paths (see README, figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "One broker for queues and logs.")]
struct Cli {
    /// Data directory of the embedded broker (`serve`, `demo`) [default: ./data].
    #[arg(long, global = true, env = "SWITCHBOARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    connection: remote::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the broker server: gRPC, REST (CloudEvents), GraphQL, /metrics.
    Serve(serve::ServeArgs),
    /// Runs the main job on the embedded broker: creates an `orders` topic with a queue and a
    /// stream subscription, publishes messages, consumes them both ways, prints what happened.
    Demo {
        /// Messages to publish.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
    },
    /// Topics on a server.
    #[command(subcommand)]
    Topic(remote::TopicCommand),
    /// Subscriptions on a server.
    #[command(subcommand, name = "sub")]
    Subscription(remote::SubCommand),
    /// Publishes messages: arguments, a file, or JSON lines on stdin.
    Publish(remote::PublishArgs),
    /// Receives from a queue subscription (ack or nack) or reads a stream subscription (commit).
    Consume(remote::ConsumeArgs),
    /// Prints every new message of a topic as it arrives.
    Tail {
        /// Topic.
        topic: String,
        /// Start from the oldest retained message.
        #[arg(long)]
        from_beginning: bool,
    },
    /// Dead letters of a subscription.
    #[command(subcommand)]
    Dlq(remote::DlqCommand),
    /// The service graph live in the terminal: edges, subscriptions, congestion.
    Top(top::TopArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        // Logs go to stderr: stdout carries results (and `--json` output) only.
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let c = &cli.connection;
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.data_dir).await,
        Command::Demo { messages } => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
            let broker = Broker::open(&data_dir)
                .await
                .with_context(|| format!("opening data directory {}", data_dir.display()))?;
            let result = demo(&broker, messages).await;
            broker.close().await?;
            result
        }
        Command::Topic(cmd) => remote::topic(c, cmd).await,
        Command::Subscription(cmd) => remote::subscription(c, cmd).await,
        Command::Publish(args) => remote::publish(c, args).await,
        Command::Consume(args) => remote::consume(c, args).await,
        Command::Tail { topic, from_beginning } => remote::tail(c, topic, from_beginning).await,
        Command::Dlq(cmd) => remote::dlq(c, cmd).await,
        Command::Top(args) => top::run(c, args).await,
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
