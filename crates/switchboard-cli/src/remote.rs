//! Commands against a running server, over its REST API: topics, subscriptions, publish,
//! consume, tail and dead letters. `--json` prints the server's JSON for scripts; otherwise
//! output is for people, with progress on long work.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// Where the server is and how to talk to it.
#[derive(Args, Debug, Clone)]
pub(crate) struct Connection {
    /// Server URL (REST).
    #[arg(long, global = true, env = "SWITCHBOARD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Bearer token.
    #[arg(long, global = true, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra CA certificate (PEM) to trust, for a server with a self-signed certificate.
    #[arg(long, global = true, env = "SWITCHBOARD_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
}

impl Connection {
    /// The server's base URL.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum TopicCommand {
    /// Creates a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions.
        #[arg(long)]
        partitions: Option<u32>,
        /// `always`, `never` or `interval:<ms>`.
        #[arg(long)]
        fsync: Option<String>,
    },
    /// Lists topics.
    List,
    /// Shows one topic.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Deletes a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub(crate) enum Mode {
    Queue,
    Stream,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SubCommand {
    /// Creates a subscription.
    Create {
        /// Topic.
        topic: String,
        /// Subscription name.
        name: String,
        /// Queue or stream.
        #[arg(long, value_enum, default_value = "queue")]
        mode: Mode,
        /// Start at the oldest message instead of only new ones.
        #[arg(long)]
        from_beginning: bool,
        /// Queue: deliveries before dead-lettering.
        #[arg(long)]
        max_deliveries: Option<u32>,
        /// Queue: one message per partition key in flight.
        #[arg(long)]
        ordered: bool,
    },
    /// Lists a topic's subscriptions.
    List {
        /// Topic.
        topic: String,
    },
    /// Shows backlog, in-flight, lag and dead-letter counts.
    Stats {
        /// Topic.
        topic: String,
        /// Subscription.
        name: String,
    },
    /// Deletes a subscription.
    Delete {
        /// Topic.
        topic: String,
        /// Subscription.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum DlqCommand {
    /// Lists dead letters of a subscription.
    List {
        /// Topic.
        topic: String,
        /// Subscription.
        subscription: String,
        /// Most letters.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Moves dead letters back to the subscription.
    Redrive {
        /// Topic.
        topic: String,
        /// Subscription.
        subscription: String,
        /// Most letters.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

/// `publish` options.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// Topic.
    topic: String,
    /// Message data, one message per argument. Without data and without --file, JSON lines
    /// are read from stdin: each line a CloudEvent in JSON (id, source and type may be left
    /// out) or any other JSON value, which becomes the data.
    data: Vec<String>,
    /// Read JSON lines from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Partition key.
    #[arg(long)]
    key: Option<String>,
    /// CloudEvents type.
    #[arg(long = "type", default_value = "switchboard.cli")]
    ty: String,
    /// CloudEvents source.
    #[arg(long, default_value = "/switchboard/cli")]
    source: String,
}

/// `consume` options.
#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// Topic.
    topic: String,
    /// Subscription (queue or stream).
    subscription: String,
    /// Most messages to take.
    #[arg(long, default_value_t = 10)]
    max: usize,
    /// Long-poll wait for the first message, ms.
    #[arg(long, default_value_t = 1000)]
    wait_ms: u64,
    /// Queue: nack instead of ack (the messages come back).
    #[arg(long)]
    nack: bool,
    /// Keep consuming until interrupted.
    #[arg(long)]
    follow: bool,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    json: bool,
}

impl Client {
    pub(crate) fn new(c: &Connection) -> anyhow::Result<Client> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = &c.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Client {
            http: b.build()?,
            base: c.server.trim_end_matches('/').to_owned(),
            token: c.token.clone(),
            json: c.json,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Value, &str)>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((b, content_type)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type).body(b.to_string());
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            bail!("{status}: {detail}");
        }
        if text.is_empty() { Ok(Value::Null) } else { Ok(serde_json::from_str(&text)?) }
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some((body, "application/json"))).await
    }

    fn print(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{v}");
        } else {
            human(v);
        }
    }
}

fn seg(s: &str) -> String {
    // Names are validated by the server; encode anyway so a bad one is refused, not misrouted.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) async fn topic(c: &Connection, cmd: TopicCommand) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    match cmd {
        TopicCommand::Create { name, partitions, fsync } => {
            let mut config = serde_json::Map::new();
            if let Some(p) = partitions {
                config.insert("partitions".into(), json!(p));
            }
            if let Some(f) = fsync {
                config.insert("fsync".into(), parse_fsync(&f)?);
            }
            let v = client.post("/v1/topics", json!({ "name": name, "config": config })).await?;
            client.print(&v, |v| println!("created topic {}", v["name"].as_str().unwrap_or(&name)));
        }
        TopicCommand::List => {
            let v = client.get("/v1/topics").await?;
            client.print(&v, |v| {
                for t in v["topics"].as_array().into_iter().flatten() {
                    println!("{}", t["name"].as_str().unwrap_or("?"));
                }
            });
        }
        TopicCommand::Describe { name } => {
            let v = client.get(&format!("/v1/topics/{}", seg(&name))).await?;
            client.print(&v, |v| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()));
        }
        TopicCommand::Delete { name } => {
            client.call(reqwest::Method::DELETE, &format!("/v1/topics/{}", seg(&name)), None).await?;
            client.print(&json!({ "deleted": name }), |_| println!("deleted topic {name}"));
        }
    }
    Ok(())
}

fn parse_fsync(s: &str) -> anyhow::Result<Value> {
    Ok(match s {
        "always" => json!("always"),
        "never" => json!("never"),
        other => match other.strip_prefix("interval:").and_then(|ms| ms.parse::<u64>().ok()) {
            Some(ms) => json!({ "interval": { "ms": ms } }),
            None => bail!("--fsync must be always, never or interval:<ms>, not {other:?}"),
        },
    })
}

pub(crate) async fn subscription(c: &Connection, cmd: SubCommand) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    match cmd {
        SubCommand::Create { topic, name, mode, from_beginning, max_deliveries, ordered } => {
            let mut config = json!({
                "mode": match mode { Mode::Queue => "queue", Mode::Stream => "stream" },
                "start": if from_beginning { "earliest" } else { "latest" },
                "ordered_by_key": ordered,
            });
            if let Some(m) = max_deliveries {
                config["max_deliveries"] = json!(m);
            }
            let v = client
                .post(
                    &format!("/v1/topics/{}/subscriptions", seg(&topic)),
                    json!({ "name": name, "config": config }),
                )
                .await?;
            client.print(&v, |_| println!("created subscription {name} on {topic}"));
        }
        SubCommand::List { topic } => {
            let v = client.get(&format!("/v1/topics/{}/subscriptions", seg(&topic))).await?;
            client.print(&v, |v| {
                for s in v["subscriptions"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["config"]["mode"].as_str().unwrap_or("")
                    );
                }
            });
        }
        SubCommand::Stats { topic, name } => {
            let v =
                client.get(&format!("/v1/topics/{}/subscriptions/{}/stats", seg(&topic), seg(&name))).await?;
            client.print(&v, |v| {
                println!(
                    "backlog={} in_flight={} lag={} scheduled={} dead_lettered={}",
                    v["backlog"], v["in_flight"], v["lag"], v["scheduled"], v["dead_lettered"]
                )
            });
        }
        SubCommand::Delete { topic, name } => {
            let path = format!("/v1/topics/{}/subscriptions/{}", seg(&topic), seg(&name));
            client.call(reqwest::Method::DELETE, &path, None).await?;
            client.print(&json!({ "deleted": name }), |_| println!("deleted subscription {name}"));
        }
    }
    Ok(())
}

/// One CloudEvent (structured JSON) per input.
fn event_from_line(line: &str, a: &PublishArgs, n: usize) -> anyhow::Result<Value> {
    let parsed: Value = serde_json::from_str(line).with_context(|| format!("line {n} is not JSON"))?;
    let mut ev = match parsed {
        Value::Object(o)
            if o.contains_key("data") || o.contains_key("data_base64") || o.contains_key("specversion") =>
        {
            Value::Object(o)
        }
        other => json!({ "data": other, "datacontenttype": "application/json" }),
    };
    fill_event(&mut ev, a);
    Ok(ev)
}

fn fill_event(ev: &mut Value, a: &PublishArgs) {
    let o = ev.as_object_mut().expect("events are objects");
    o.entry("specversion").or_insert(json!("1.0"));
    o.entry("id").or_insert_with(|| json!(switchboard_core::new_message_id()));
    o.entry("source").or_insert(json!(a.source));
    o.entry("type").or_insert(json!(a.ty));
    if let Some(k) = &a.key {
        o.entry("partitionkey").or_insert(json!(k));
    }
}

pub(crate) async fn publish(c: &Connection, a: PublishArgs) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    let path = format!("/v1/topics/{}/events", seg(&a.topic));
    let mut events = Vec::new();
    if !a.data.is_empty() {
        for d in &a.data {
            let mut ev = json!({ "data": d, "datacontenttype": "text/plain" });
            fill_event(&mut ev, &a);
            events.push(ev);
        }
    } else {
        let reader: Box<dyn BufRead> = match &a.file {
            Some(f) => Box::new(std::io::BufReader::new(
                std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?,
            )),
            None => Box::new(std::io::stdin().lock()),
        };
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if !line.trim().is_empty() {
                events.push(event_from_line(&line, &a, i + 1)?);
            }
        }
    }
    let progress = (!client.json && std::io::stderr().is_terminal() && events.len() > 1000)
        .then(|| indicatif::ProgressBar::new(events.len() as u64));
    let mut receipts = Vec::new();
    for chunk in events.chunks(500) {
        let v = client
            .call(
                reqwest::Method::POST,
                &path,
                Some((Value::Array(chunk.to_vec()), "application/cloudevents-batch+json")),
            )
            .await?;
        receipts.extend(v["receipts"].as_array().cloned().unwrap_or_default());
        if let Some(p) = &progress {
            p.inc(chunk.len() as u64);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let out = json!({ "published": events.len(), "receipts": receipts });
    client.print(&out, |_| println!("published {} message(s) to {}", events.len(), a.topic));
    Ok(())
}

pub(crate) async fn consume(c: &Connection, a: ConsumeArgs) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    let base = format!("/v1/topics/{}/subscriptions/{}", seg(&a.topic), seg(&a.subscription));
    let info = client.get(&base).await?;
    let stream = info["config"]["mode"].as_str() == Some("stream");
    let mut taken = 0;
    loop {
        let want = if a.follow { a.max } else { a.max - taken };
        let messages = if stream {
            client.get(&format!("{base}/messages?max={want}")).await?["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        } else {
            client.post(&format!("{base}/receive"), json!({ "max": want, "wait_ms": a.wait_ms })).await?["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        for m in &messages {
            client.print(m, |m| {
                let ev = &m["event"];
                let data = ev.get("data").map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned));
                println!(
                    "{}/{} attempt={} id={} {}",
                    m["partition"],
                    m["offset"],
                    m["attempt"].as_u64().unwrap_or(1),
                    ev["id"].as_str().unwrap_or("?"),
                    data.unwrap_or_else(|| "<binary>".into())
                )
            });
        }
        if stream {
            // Commit past what was printed, per partition.
            let mut next: std::collections::BTreeMap<u64, u64> = Default::default();
            for m in &messages {
                let (p, o) = (m["partition"].as_u64().unwrap_or(0), m["offset"].as_u64().unwrap_or(0));
                next.insert(p, o + 1);
            }
            for (p, o) in next {
                client.post(&format!("{base}/commit"), json!({ "partition": p, "offset": o })).await?;
            }
        } else {
            let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
            if a.nack {
                for r in receipts {
                    client
                        .call(
                            reqwest::Method::POST,
                            &format!("{base}/nack"),
                            Some((json!({ "receipt": r }), "application/json")),
                        )
                        .await?;
                }
            } else if !receipts.is_empty() {
                client.post(&format!("{base}/ack"), json!({ "receipts": receipts })).await?;
            }
        }
        taken += messages.len();
        if !a.follow && (taken >= a.max || messages.is_empty()) {
            break;
        }
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if !client.json {
        eprintln!(
            "{} {} message(s)",
            if a.nack {
                "nacked"
            } else if stream {
                "read and committed"
            } else {
                "acked"
            },
            taken
        );
    }
    Ok(())
}

pub(crate) async fn tail(c: &Connection, topic: String, from_beginning: bool) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    let info = client.get(&format!("/v1/topics/{}", seg(&topic))).await?;
    let mut next: Vec<u64> = info["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            if from_beginning {
                p["start_offset"].as_u64().unwrap_or(0)
            } else {
                p["end_offset"].as_u64().unwrap_or(0)
            }
        })
        .collect();
    loop {
        let mut any = false;
        for (p, at) in next.iter_mut().enumerate() {
            let v = client
                .get(&format!("/v1/topics/{}/partitions/{p}/messages?offset={at}&max=500", seg(&topic)))
                .await?;
            for m in v["messages"].as_array().into_iter().flatten() {
                any = true;
                client.print(m, |m| println!("{}/{} {}", m["partition"], m["offset"], m["event"]));
            }
            if let Some(n) = v["next_offset"].as_u64() {
                *at = n;
            }
        }
        if !any {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

pub(crate) async fn dlq(c: &Connection, cmd: DlqCommand) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    match cmd {
        DlqCommand::List { topic, subscription, max } => {
            let v = client
                .get(&format!(
                    "/v1/topics/{}/subscriptions/{}/deadletters?max={max}",
                    seg(&topic),
                    seg(&subscription)
                ))
                .await?;
            client.print(&v, |v| {
                for m in v["messages"].as_array().into_iter().flatten() {
                    let ev = &m["event"];
                    println!(
                        "{} reason={} attempts={} error={}",
                        ev["id"].as_str().unwrap_or("?"),
                        ev["dlreason"].as_str().unwrap_or("?"),
                        ev["dlattempts"].as_str().unwrap_or("?"),
                        ev["dlerror"].as_str().unwrap_or("-")
                    );
                }
            });
        }
        DlqCommand::Redrive { topic, subscription, max } => {
            let v = client
                .post(
                    &format!("/v1/topics/{}/subscriptions/{}/redrive", seg(&topic), seg(&subscription)),
                    json!({ "max": max }),
                )
                .await?;
            client.print(&v, |v| println!("redrove {} dead letter(s)", v["moved"]));
        }
    }
    Ok(())
}
