//! The disk-full campaign: the data directory on a small tmpfs, publishes until the disk is
//! full, then checks what DESIGN.md §6 promises — "a full disk rejects publishes with an
//! error and loses nothing already acknowledged" — and that the server recovers.
//!
//! 1. A `ballast` topic takes a few MiB, then `fill` (1 partition, 1 MiB segments, so
//!    segments roll while the disk fills) takes publishes of `message_kib` until one fails.
//! 2. The failure must be clear on both edges: gRPC RESOURCE_EXHAUSTED and HTTP 507, each
//!    naming the lack of space; later attempts must fail the same way, promptly.
//! 3. The server stays up: `/healthz` answers, and every acknowledged publish reads back.
//!    Then 512-byte messages take the last pages until they fail too, and the server is
//!    SIGKILLed and restarted with the disk still full: it must come back and serve reads.
//! 4. Deleting `ballast` frees space: publishes succeed again. Remounting the tmpfs larger
//!    does too.
//! 5. A SIGKILL and restart on the same directory: everything acknowledged still reads back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use switchboard_proto::switchboard::v1 as api;
use tokio_stream::wrappers::ReceiverStream;

use crate::grpc::{self, Client, In, Out};
use crate::procfs;
use crate::report::{Report, verdict};
use crate::server::ServerSpec;

const FILL: &str = "fill";
const BALLAST: &str = "ballast";
/// A topic first created with the disk full.
const LATE: &str = "late";
/// One call may take this long; longer counts as the server wedged.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishes tried after each way of freeing space.
const RECOVERY_PUBLISHES: u64 = 8;

/// Settings of the disk-full campaign.
#[derive(Clone, Debug)]
pub struct DiskFullConfig {
    /// The `switchboard` binary under test.
    pub server_bin: PathBuf,
    /// Size of the tmpfs, MiB.
    pub size_mib: u64,
    /// Size it is remounted to, MiB.
    pub grow_to_mib: u64,
    /// Size of each message's data, KiB.
    pub message_kib: u64,
    /// Space the ballast topic takes, MiB.
    pub ballast_mib: u64,
}

impl DiskFullConfig {
    /// Defaults: 16 MiB, grown to 64 MiB; 64 KiB messages; 3 MiB of ballast.
    pub fn new(server_bin: PathBuf) -> DiskFullConfig {
        DiskFullConfig { server_bin, size_mib: 16, grow_to_mib: 64, message_kib: 64, ballast_mib: 3 }
    }
}

/// What the disk-full campaign found.
#[derive(Debug, Default, Serialize)]
pub struct DiskFullReport {
    /// Why the campaign did not run (not root, mounting failed).
    pub skipped: Option<String>,
    /// Size of the tmpfs, MiB.
    pub tmpfs_mib: u64,
    /// Publishes acknowledged before the first failure.
    pub acked_before_full: u64,
    /// The first failed publish over gRPC: `Code: message`.
    pub grpc_error: Option<String>,
    /// Whether it was RESOURCE_EXHAUSTED naming the lack of space.
    pub grpc_error_clear: bool,
    /// Of the attempts after the first failure: failed the same way / succeeded / hung.
    pub later_attempts: (u64, u64, u64),
    /// The failed publish over REST: status and problem document.
    pub rest_error: Option<(u16, String)>,
    /// Whether it was 507 naming the lack of space.
    pub rest_error_clear: bool,
    /// Whether the process was running and `/healthz` answered 200 with the disk full.
    pub healthy_while_full: bool,
    /// Acknowledged publishes missing from a read of the topic with the disk full.
    pub missing_while_full: Option<u64>,
    /// What a queue receive did with the disk full (information: receiving writes the
    /// delivery count to the subscription's journal).
    pub queue_receive_while_full: String,
    /// Small (512 B) publishes acknowledged after the large ones failed: the last pages.
    pub small_acked_while_full: u64,
    /// How the first small publish that failed was refused.
    pub small_error: Option<String>,
    /// Whether the server started again (and `/healthz` answered) after a SIGKILL with the
    /// disk still full.
    pub restarted_while_full: bool,
    /// Acknowledged publishes missing after that restart.
    pub missing_after_full_restart: Option<u64>,
    /// What a publish did right after that restart (information).
    pub publish_after_full_restart: Option<String>,
    /// What creating a topic did with the disk full.
    pub create_topic_while_full: Option<String>,
    /// What creating that topic again and publishing to it did once space was back.
    pub create_topic_after_recovery: String,
    /// Publishes that succeeded after deleting the ballast topic (of `RECOVERY_PUBLISHES`).
    pub published_after_delete: u64,
    /// Publishes that succeeded after remounting the tmpfs larger.
    pub published_after_remount: u64,
    /// Acknowledged publishes missing after a SIGKILL and restart.
    pub missing_after_restart: Option<u64>,
    /// Acknowledged publishes in all.
    pub acked_total: u64,
    /// Whether a publish succeeded after the restart.
    pub published_after_restart: bool,
}

impl Report for DiskFullReport {
    fn violations(&self) -> Vec<String> {
        if self.skipped.is_some() {
            return Vec::new();
        }
        let mut v = Vec::new();
        if self.acked_before_full == 0 {
            v.push("no publish was acknowledged before the disk filled, so nothing was checked".into());
        }
        if !self.grpc_error_clear {
            v.push(format!(
                "gRPC publish on a full disk: expected RESOURCE_EXHAUSTED naming the space, got {:?}",
                self.grpc_error
            ));
        }
        if self.later_attempts.2 > 0 {
            v.push(format!(
                "{} publishes on the full disk got no answer within {CALL_TIMEOUT:?}",
                self.later_attempts.2
            ));
        }
        if !self.rest_error_clear {
            v.push(format!(
                "REST publish on a full disk: expected 507 naming the space, got {:?}",
                self.rest_error
            ));
        }
        if !self.healthy_while_full {
            v.push("the server was not healthy with the disk full".into());
        }
        let small = self.small_error.as_deref().unwrap_or("none failed");
        if !small.starts_with("ResourceExhausted") || !mentions_space(small) {
            v.push(format!(
                "a small publish on a full disk: expected RESOURCE_EXHAUSTED naming the space, got {small}"
            ));
        }
        if let Some(e) = self.create_topic_while_full.as_deref()
            && e != "succeeded"
            && (!e.starts_with("ResourceExhausted") || !mentions_space(e))
        {
            v.push(format!(
                "creating a topic on a full disk: expected RESOURCE_EXHAUSTED naming the space, got {e}"
            ));
        }
        if self.create_topic_after_recovery != "succeeded" {
            v.push(format!(
                "a topic refused on the full disk could not be created after recovery: {}",
                self.create_topic_after_recovery
            ));
        }
        if !self.restarted_while_full {
            v.push("the server did not come back after a SIGKILL with the disk full".into());
        }
        for (when, missing) in [
            ("with the disk full", self.missing_while_full),
            ("after a restart with the disk full", self.missing_after_full_restart),
            ("after the final restart", self.missing_after_restart),
        ] {
            match missing {
                Some(0) => {}
                Some(n) => v.push(format!("{n} acknowledged publishes could not be read {when}")),
                None => v.push(format!("reading the topic failed {when}")),
            }
        }
        if self.published_after_delete < RECOVERY_PUBLISHES {
            v.push(format!(
                "after deleting a topic only {}/{RECOVERY_PUBLISHES} publishes succeeded",
                self.published_after_delete
            ));
        }
        if self.published_after_remount < RECOVERY_PUBLISHES {
            v.push(format!(
                "after growing the disk only {}/{RECOVERY_PUBLISHES} publishes succeeded",
                self.published_after_remount
            ));
        }
        if !self.published_after_restart {
            v.push("publishing failed after the restart".into());
        }
        v
    }
}

impl std::fmt::Display for DiskFullReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "disk-full campaign")?;
        if let Some(why) = &self.skipped {
            return writeln!(f, "  SKIPPED: {why}");
        }
        writeln!(
            f,
            "  tmpfs {} MiB: {} publishes acknowledged before the first failure",
            self.tmpfs_mib, self.acked_before_full
        )?;
        writeln!(f, "  gRPC error: {}", self.grpc_error.as_deref().unwrap_or("none"))?;
        if let Some((status, body)) = &self.rest_error {
            writeln!(f, "  REST error: {status} {body}")?;
        }
        let (same, ok, hung) = self.later_attempts;
        writeln!(f, "  later attempts: {same} failed the same way, {ok} succeeded, {hung} hung")?;
        writeln!(
            f,
            "  while full: healthy {}, acknowledged missing {:?}, queue receive: {}",
            self.healthy_while_full, self.missing_while_full, self.queue_receive_while_full
        )?;
        writeln!(
            f,
            "  creating a topic while full: {}; again after recovery: {}",
            self.create_topic_while_full.as_deref().unwrap_or("not tried"),
            self.create_topic_after_recovery
        )?;
        writeln!(
            f,
            "  then {} small publishes until: {}",
            self.small_acked_while_full,
            self.small_error.as_deref().unwrap_or("none failed")
        )?;
        writeln!(
            f,
            "  SIGKILL + restart with the disk full: up {}, acknowledged missing {:?}, a publish: {}",
            self.restarted_while_full,
            self.missing_after_full_restart,
            self.publish_after_full_restart.as_deref().unwrap_or("not tried")
        )?;
        writeln!(
            f,
            "  recovery: {}/{RECOVERY_PUBLISHES} publishes after deleting a topic, {}/{RECOVERY_PUBLISHES} after growing the disk",
            self.published_after_delete, self.published_after_remount
        )?;
        writeln!(
            f,
            "  after SIGKILL + restart: {} acknowledged, missing {:?}, publish works: {}",
            self.acked_total, self.missing_after_restart, self.published_after_restart
        )?;
        verdict(f, &self.violations())
    }
}

/// A tmpfs mounted for the campaign, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Result<Tmpfs, String> {
        mount(&["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"], dir)?;
        Ok(Tmpfs { dir: dir.to_owned() })
    }

    fn grow(&self, size_mib: u64) -> Result<(), String> {
        mount(&["-o", &format!("remount,size={size_mib}m")], &self.dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server killed on an error path may still be letting go of its files.
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn mount(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = std::process::Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("running mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {} {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the disk-full campaign.
///
/// # Errors
/// The harness failed (the server did not start, a directory could not be made).
pub async fn run(config: DiskFullConfig) -> anyhow::Result<DiskFullReport> {
    let mut report = DiskFullReport { tmpfs_mib: config.size_mib, ..Default::default() };
    if !procfs::is_root() {
        report.skipped = Some("mounting a tmpfs needs root; run as root to check full-disk behaviour".into());
        return Ok(report);
    }
    let work = tempfile::Builder::new().prefix("switchboard-diskfull-").tempdir()?;
    let data = work.path().join("data");
    std::fs::create_dir_all(&data)?;
    let tmpfs = match Tmpfs::mount(&data, config.size_mib) {
        Ok(t) => t,
        Err(why) => {
            report.skipped = Some(why);
            return Ok(report);
        }
    };
    let spec = ServerSpec::new(config.server_bin.clone(), data, work.path().join("server.log"))?;
    eprintln!("disk-full: tmpfs of {} MiB at {}", config.size_mib, tmpfs.dir.display());
    let result = scenario(&config, &spec, &tmpfs, &mut report).await;
    drop(tmpfs);
    result.map(|()| report)
}

async fn scenario(
    config: &DiskFullConfig,
    spec: &ServerSpec,
    tmpfs: &Tmpfs,
    report: &mut DiskFullReport,
) -> anyhow::Result<()> {
    let mut server = spec.start().await?;
    let mut client = grpc::client(spec.grpc)?;
    let http = reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?;
    let data = vec![b'x'; usize::try_from(config.message_kib * 1024)?];
    let mut acked: Vec<String> = Vec::new();

    grpc::create_topic(&mut client, BALLAST, grpc::topic_config(1)).await?;
    for n in 0..config.ballast_mib * 1024 / config.message_kib {
        publish(&mut client, BALLAST, format!("ballast-{n}"), &data).await?.map_err(anyhow::Error::msg)?;
    }
    let mut fill = grpc::topic_config(1);
    fill.segment_bytes = Some(1 << 20);
    grpc::create_topic(&mut client, FILL, fill).await?;
    // Created while there is space: a subscription's creation writes its files.
    grpc::create_subscription(&mut client, FILL, "work", grpc::queue_config(30_000, false)).await?;

    // 1. Fill.
    let mut n = 0u64;
    let first_error = loop {
        let id = format!("m-{n}");
        n += 1;
        match publish(&mut client, FILL, id.clone(), &data).await? {
            Ok(()) => acked.push(id),
            Err(e) => break e,
        }
        if n > 100_000 {
            bail!("the disk never filled after {n} publishes: is the data directory on the tmpfs?");
        }
    };
    report.acked_before_full = acked.len() as u64;
    report.grpc_error_clear = first_error.starts_with("ResourceExhausted") && mentions_space(&first_error);
    report.grpc_error = Some(first_error.clone());
    eprintln!("disk-full: full after {} publishes: {first_error}", acked.len());

    // 2. Later attempts, and the REST edge.
    let mut later = (0, 0, 0);
    for _ in 0..5 {
        let id = format!("m-{n}");
        n += 1;
        match tokio::time::timeout(CALL_TIMEOUT, publish(&mut client, FILL, id.clone(), &data)).await {
            Ok(Ok(Ok(()))) => {
                later.1 += 1;
                acked.push(id);
            }
            Ok(Ok(Err(e))) if e == first_error => later.0 += 1,
            Ok(Ok(Err(e))) => {
                eprintln!("disk-full: a later attempt failed differently: {e}");
            }
            Ok(Err(_)) | Err(_) => later.2 += 1,
        }
    }
    report.later_attempts = later;
    let rest = http
        .post(format!("{}/v1/topics/{FILL}/events", spec.http_url()))
        .header("ce-id", format!("rest-{n}"))
        .header("ce-source", "/switchboard-campaign")
        .header("ce-type", "campaign.message")
        .header("ce-specversion", "1.0")
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    match rest {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if status == 200 {
                acked.push(format!("rest-{n}"));
            }
            report.rest_error_clear = status == 507 && mentions_space(&body);
            report.rest_error = Some((status, body));
        }
        Err(e) => report.rest_error = Some((0, format!("no answer: {e}"))),
    }

    // 3. Still up, and everything acknowledged reads back.
    let healthz = http.get(format!("{}/healthz", spec.http_url())).send().await;
    report.healthy_while_full = server.is_running() && healthz.is_ok_and(|r| r.status().is_success());
    report.missing_while_full = missing(&http, spec, &acked).await;
    report.queue_receive_while_full = queue_receive(&mut client).await;

    // The last pages: small messages until they fail too.
    let small = vec![b's'; 512];
    loop {
        let id = format!("m-{n}");
        n += 1;
        match publish(&mut client, FILL, id.clone(), &small).await? {
            Ok(()) => {
                acked.push(id);
                report.small_acked_while_full += 1;
            }
            Err(e) => {
                report.small_error = Some(e);
                break;
            }
        }
        if report.small_acked_while_full > 100_000 {
            bail!("small publishes never failed on a full disk");
        }
    }

    // With the last pages gone, a new topic cannot write its metadata either.
    let create = client
        .create_topic(api::CreateTopicRequest { name: LATE.to_owned(), config: Some(grpc::topic_config(1)) })
        .await;
    report.create_topic_while_full = Some(match create {
        Ok(_) => "succeeded".to_owned(),
        Err(status) => grpc::describe(&status),
    });

    // A crash with the disk still full: the server must start again and serve what it holds.
    server.sigkill().await?;
    let mut server = spec.start().await.context("restarting the server with the disk full")?;
    let healthz = http.get(format!("{}/healthz", spec.http_url())).send().await;
    report.restarted_while_full = server.is_running() && healthz.is_ok_and(|r| r.status().is_success());
    report.missing_after_full_restart = missing(&http, spec, &acked).await;
    report.publish_after_full_restart =
        Some(match publish(&mut client, FILL, format!("m-{n}"), &data).await? {
            Ok(()) => {
                acked.push(format!("m-{n}"));
                "succeeded".to_owned()
            }
            Err(e) => e,
        });
    n += 1;

    // 4. Free space two ways.
    client
        .delete_topic(api::DeleteTopicRequest { name: BALLAST.to_owned() })
        .await
        .context("deleting the ballast topic")?;
    report.published_after_delete = publish_some(&mut client, &data, &mut n, &mut acked).await?;
    tmpfs.grow(config.grow_to_mib).map_err(anyhow::Error::msg)?;
    report.published_after_remount = publish_some(&mut client, &data, &mut n, &mut acked).await?;
    // The topic refused with the disk full must not be left half made.
    let late = async {
        grpc::create_topic(&mut client, LATE, grpc::topic_config(1)).await?;
        publish(&mut client, LATE, "late-0".to_owned(), &data).await?.map_err(anyhow::Error::msg)
    };
    report.create_topic_after_recovery = match late.await {
        Ok(()) => "succeeded".to_owned(),
        Err(e) => format!("{e:#}"),
    };

    // 5. Crash and recover.
    server.sigkill().await?;
    let server = spec.start().await?;
    report.missing_after_restart = missing(&http, spec, &acked).await;
    report.published_after_restart = publish(&mut client, FILL, format!("m-{n}"), &data).await?.is_ok();
    if report.published_after_restart {
        acked.push(format!("m-{n}"));
    }
    report.acked_total = acked.len() as u64;
    server.sigterm().await?;
    Ok(())
}

/// Publishes one message: `Err(Code: message)` for a refusal; the outer error only for a
/// publish that got no answer at all.
async fn publish(
    client: &mut Client,
    topic: &str,
    id: String,
    data: &[u8],
) -> anyhow::Result<Result<(), String>> {
    let request = api::PublishRequest {
        topic: topic.to_owned(),
        events: vec![grpc::event(id, None, data.to_vec())],
        deliver_at: None,
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.publish(request)).await {
        Ok(Ok(_)) => Ok(Ok(())),
        Ok(Err(status)) => Ok(Err(grpc::describe(&status))),
        Err(_) => bail!("a publish got no answer within {CALL_TIMEOUT:?}: the server is wedged"),
    }
}

/// Publishes [`RECOVERY_PUBLISHES`] messages; how many succeeded.
async fn publish_some(
    client: &mut Client,
    data: &[u8],
    n: &mut u64,
    acked: &mut Vec<String>,
) -> anyhow::Result<u64> {
    let mut ok = 0;
    for _ in 0..RECOVERY_PUBLISHES {
        let id = format!("m-{n}");
        *n += 1;
        match publish(client, FILL, id.clone(), data).await? {
            Ok(()) => {
                ok += 1;
                acked.push(id);
            }
            Err(e) => eprintln!("disk-full: a publish after freeing space failed: {e}"),
        }
    }
    Ok(ok)
}

fn mentions_space(text: &str) -> bool {
    let text = text.to_lowercase();
    text.contains("no space") || text.contains("disk is full") || text.contains("disk full")
}

/// How many of `acked` a read of the whole `fill` partition lacks; `None` if reading failed.
async fn missing(http: &reqwest::Client, spec: &ServerSpec, acked: &[String]) -> Option<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0u64;
    loop {
        let url =
            format!("{}/v1/topics/{FILL}/partitions/0/messages?offset={offset}&max=100", spec.http_url());
        let response = http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            eprintln!(
                "disk-full: reading failed: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
            return None;
        }
        let page: Value = response.json().await.ok()?;
        let messages = page["messages"].as_array()?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            if let Some(id) = m["event"]["id"].as_str() {
                seen.insert(id.to_owned());
            }
        }
        offset = page["next_offset"].as_u64()?;
    }
    Some(acked.iter().filter(|id| !seen.contains(*id)).count() as u64)
}

/// Receives from the queue subscription and acks what came: what happened, in words
/// (information: receiving and acking write to the subscription's journal).
async fn queue_receive(client: &mut Client) -> String {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let open = api::consume_request::Open { topic: FILL.into(), subscription: "work".into(), credits: 4 };
    let _ = tx.send(api::ConsumeRequest { request_id: 0, request: Some(In::Open(open)) }).await;
    let attempt = async {
        let mut inbound =
            client.consume(ReceiverStream::new(rx)).await.map_err(|s| grpc::describe(&s))?.into_inner();
        let mut delivered = 0;
        loop {
            match inbound.message().await {
                Ok(Some(api::ConsumeResponse { response: Some(Out::Deliveries(d)) })) => {
                    delivered = d.deliveries.len();
                    let receipts = d.deliveries.into_iter().map(|d| d.receipt).collect();
                    let ack = In::Ack(api::consume_request::Ack { receipts });
                    let _ = tx.send(api::ConsumeRequest { request_id: 1, request: Some(ack) }).await;
                }
                Ok(Some(api::ConsumeResponse { response: Some(Out::Settled(s)) })) => {
                    let failed: Vec<String> =
                        s.outcomes.into_iter().filter_map(|o| o.error.map(|e| e.message)).collect();
                    return Ok(match failed.first() {
                        None => format!("delivered {delivered}, acked them"),
                        Some(e) => format!("delivered {delivered}, {} acks failed: {e}", failed.len()),
                    });
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("the stream ended".to_owned()),
                Err(s) => return Err(grpc::describe(&s)),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "nothing delivered or settled within 5 s".to_owned(),
    }
}
