//! A real crash test: a child process publishes and acks under `always` fsync and is killed
//! with SIGKILL at random moments, many times, on one data directory. After every kill the
//! broker is opened again in this process and must serve every publish and must not deliver
//! again any message whose ack the child saw succeed.
//!
//! The child is this test binary run again with only [`crash_child`] selected and
//! `SWITCHBOARD_CRASH_CHILD` set. It tells the parent what the broker acknowledged, one line
//! per event on stdout, each written *after* the call returned `Ok`:
//!
//! - `OPENING`: about to open the broker (recovery runs inside);
//! - `READY`: the broker is open and the topic and subscription exist;
//! - `P <id>`: `publish` / `publish_batch` returned `Ok` for the message;
//! - `A <id>`: `ack` / `ack_many` returned `Ok` for a delivery of the message;
//! - `B <id>,<id>,…`: written *before* a batch whose messages share a partition key, so they
//!   land in one partition and must be stored all or none.
//!
//! Knobs: `SWITCHBOARD_CRASH_KILLS` (default 25 when `CI` is set, else 40).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard_broker::{
    Broker, BrokerConfig, BrokerDelivery, BrokerError, PublishOptions, SeekTo, SubscriptionConfig,
    TopicConfig,
};
use switchboard_core::{Message, SystemClock};
use switchboard_storage::FileStorage;
use tokio::sync::mpsc;

use crate::util::{sub, topic};

/// Set in the child only: the data directory. Without it `crash_child` does nothing.
const CHILD_DIR: &str = "SWITCHBOARD_CRASH_CHILD";
/// Set in the child only: the round number, which makes message ids unique across rounds.
const CHILD_ROUND: &str = "SWITCHBOARD_CRASH_ROUND";
const KILLS: &str = "SWITCHBOARD_CRASH_KILLS";

const TOPIC: &str = "crash";
const QUEUE: &str = "q";
const AUDIT: &str = "audit";

/// Concurrent publishers in the child, so that appends share fsyncs (group commit).
const PUBLISHERS: u64 = 4;
/// Upper bound on the child's publish rate, in messages per second. Every check reads the
/// whole topic, so this bounds the test's run time on fast machines (at most ~2000 messages
/// a round) without ever idling the publishers before the kill.
const MAX_PUBLISH_RATE: f64 = 8_000.0;
/// Competing queue consumers in the child.
const CONSUMERS: usize = 2;
/// A child that has not been killed by then is an orphan whose parent is gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

fn topic_config() -> TopicConfig {
    TopicConfig { partitions: 2, ..TopicConfig::default() }
}

/// Built the same way by parent and child so that creating it again is a no-op. Short leases
/// so the child's redeliveries come soon; no `max_deliveries`, so no message leaves the
/// queue through a dead-letter topic: every message is acked or still deliverable, which is
/// what the parent checks.
fn queue_config() -> SubscriptionConfig {
    SubscriptionConfig { lease_ms: 1_000, max_deliveries: None, ..SubscriptionConfig::queue() }
}

/// The broker on real files with the system clock, as `Broker::open` (fsync `always` by
/// default), but with a small journal compaction threshold: compaction (a snapshot, then
/// deleting the journal segments it replaces) then runs every few hundred acks, so kills
/// land inside it too.
async fn open(dir: &Path) -> Broker {
    let config = BrokerConfig { journal_compact_bytes: 32 * 1024, ..BrokerConfig::default() };
    Broker::open_with(Arc::new(FileStorage::new()), dir, Arc::new(SystemClock), config)
        .await
        .unwrap_or_else(|e| panic!("the broker does not open on {}: {e}", dir.display()))
}

fn message(id: &str) -> Message {
    Message::new("/crash", "crash.event", payload(id)).with_id(id)
}

fn payload(id: &str) -> String {
    format!("payload of {id}")
}

// ---------------------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------------------

/// The child role: does nothing unless `SWITCHBOARD_CRASH_CHILD` is set; then publishes and
/// acks until it is killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(child_workload(PathBuf::from(dir), round));
}

/// Writes one protocol line. One `write` per line (shorter than `PIPE_BUF`, so atomic on a
/// pipe): a kill never leaves half a line, and the parent ignores an unterminated one anyway.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(format!("{line}\n").as_bytes()).and_then(|()| out.flush()).is_err() {
        // The parent is gone: nobody will kill us.
        std::process::exit(3);
    }
}

async fn child_workload(dir: PathBuf, round: u64) {
    // libtest has printed "test crash::crash_child ... " without a newline: end that line so
    // that ours start at the beginning of one.
    emit("");
    emit("OPENING");
    let broker = open(&dir).await;
    broker.create_topic(&topic(TOPIC), topic_config()).await.unwrap();
    broker.create_subscription(&topic(TOPIC), &sub(QUEUE), queue_config()).await.unwrap();
    emit("READY");
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..PUBLISHERS {
        tasks.spawn(publisher(broker.clone(), round, worker, seq.clone()));
    }
    for _ in 0..CONSUMERS {
        tasks.spawn(consumer(broker.clone()));
    }
    // The tasks never end on their own: the first one to finish has failed.
    match tokio::time::timeout(CHILD_LIFETIME, tasks.join_next()).await {
        Ok(Some(Err(e))) => panic!("a child task failed: {e}"),
        Ok(_) => panic!("a child task stopped"),
        Err(_) => panic!("not killed within {CHILD_LIFETIME:?}; is the parent gone?"),
    }
}

async fn publisher(broker: Broker, round: u64, worker: u64, seq: Arc<AtomicU64>) {
    let t = topic(TOPIC);
    let next_id = || format!("r{round}-{}", seq.fetch_add(1, Ordering::Relaxed));
    let started = Instant::now();
    for i in 0u64.. {
        while seq.load(Ordering::Relaxed) as f64 > MAX_PUBLISH_RATE * started.elapsed().as_secs_f64() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ids: Vec<String> = match i % 8 {
            // One partition key: one partition, so the batch is stored all or none.
            3 => {
                let ids: Vec<String> = (0..rand::random_range(2..=8)).map(|_| next_id()).collect();
                emit(&format!("B {}", ids.join(",")));
                let key = format!("key-{worker}");
                let batch = ids.iter().map(|id| message(id).with_key(key.clone())).collect();
                broker.publish_batch(&t, batch, PublishOptions::default()).await.unwrap();
                ids
            }
            // No key: round-robin over both partitions, atomic per partition only.
            7 => {
                let ids: Vec<String> = (0..rand::random_range(2..=8)).map(|_| next_id()).collect();
                let batch = ids.iter().map(|id| message(id)).collect();
                broker.publish_batch(&t, batch, PublishOptions::default()).await.unwrap();
                ids
            }
            _ => {
                let id = next_id();
                broker.publish(&t, message(&id)).await.unwrap();
                vec![id]
            }
        };
        let lines: Vec<String> = ids.iter().map(|id| format!("P {id}")).collect();
        emit(&lines.join("\n"));
    }
}

/// An ack that lost a race with its lease (a slow fsync on a busy machine can outlast the
/// 1 s lease) is not acknowledged, so it is not reported; anything else is a failure.
fn settled(result: Result<(), BrokerError>) -> bool {
    match result {
        Ok(()) => true,
        Err(BrokerError::LeaseExpired(_) | BrokerError::UnknownReceipt(_)) => false,
        Err(e) => panic!("ack failed: {e}"),
    }
}

async fn consumer(broker: Broker) {
    let c = broker.queue_consumer(&topic(TOPIC), &sub(QUEUE)).unwrap();
    for i in 0u64.. {
        let got = c.receive(32, Duration::from_millis(5)).await.unwrap();
        // Both ways of acking: one journal write per ack, and one per batch.
        if i % 2 == 0 {
            for d in &got {
                if settled(c.ack(d.receipt.as_ref().unwrap()).await) {
                    emit(&format!("A {}", d.message.id));
                }
            }
        } else if !got.is_empty() {
            let receipts: Vec<_> = got.iter().map(|d| d.receipt.unwrap()).collect();
            let results = c.ack_many(&receipts).await.unwrap();
            let lines: Vec<String> = got
                .iter()
                .zip(results)
                .filter_map(|(d, r)| settled(r).then(|| format!("A {}", d.message.id)))
                .collect();
            if !lines.is_empty() {
                emit(&lines.join("\n"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------------------

/// Kills the child if the parent test fails half-way, so no child outlives it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one child run reported before it was killed.
struct ChildRun {
    lines: Vec<String>,
    /// The child started opening the broker.
    opening: bool,
    /// When the child reported the broker open, from its start.
    ready_after: Option<Duration>,
    killed_after: Duration,
}

#[cfg(unix)]
fn killed_by_sigkill(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed_by_sigkill(status: ExitStatus) -> bool {
    !status.success()
}

/// This test binary, to run again as the child. On Linux through `/proc/self/exe`: when
/// cargo rebuilds the test binary while this test runs (another build in the same target
/// directory), the file at `current_exe()` is replaced or gone, but the running one is still
/// reachable there, and it is the code this test was built from.
fn this_binary() -> PathBuf {
    let proc_self = Path::new("/proc/self/exe");
    if cfg!(target_os = "linux") && proc_self.exists() {
        proc_self.to_owned()
    } else {
        std::env::current_exe().unwrap()
    }
}

/// Runs one child on `dir` and kills it: usually 20–250 ms after it reported `READY`; in one
/// round out of four at a random moment of its start-up, which lasted `startup` last time
/// (process start, then opening the broker: recovery, replaying journals).
async fn run_child(dir: &Path, round: u64, startup: Duration) -> ChildRun {
    let early = rand::random_bool(0.25);
    let mut child = ChildGuard(
        Command::new(this_binary())
            .args(["--exact", "crash::crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .env(CHILD_ROUND, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("round {round}: cannot start the child: {e}")),
    );
    let started = Instant::now();
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        // Only whole lines count: an unterminated tail was cut short by the kill.
        while matches!(stdout.read_line(&mut line), Ok(n) if n > 0) {
            if let Some(l) = line.strip_suffix('\n')
                && tx.send(l.to_owned()).is_err()
            {
                break;
            }
            line.clear();
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut lines = Vec::new();
    let mut opening = false;
    let mut ready_after = None;
    let startup_ms = startup.as_millis() as u64;
    let mut kill_at = early.then(|| started + Duration::from_millis(rand::random_range(0..=startup_ms)));
    loop {
        // Until `READY` (or the early kill time) the wait is only bounded by a generous timeout.
        let until = kill_at.unwrap_or(started + Duration::from_secs(60));
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    opening |= line == "OPENING";
                    if line == "READY" && ready_after.is_none() {
                        ready_after = Some(started.elapsed());
                        kill_at.get_or_insert_with(|| Instant::now() + Duration::from_millis(rand::random_range(20..250)));
                    }
                    lines.push(line);
                }
                None => break,
            },
            () = tokio::time::sleep_until(until.into()) => {
                assert!(kill_at.is_some(), "round {round}: the child did not open the broker within 60 s");
                break;
            }
        }
    }
    // SIGKILL on unix. If the child already died on its own, the status below says so.
    let _ = child.0.kill();
    let killed_after = started.elapsed();
    let status = child.0.wait().unwrap();
    reader.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    let stderr = stderr_reader.join().unwrap();
    assert!(
        killed_by_sigkill(status),
        "round {round}: the child ended on its own ({status}) instead of being killed;\nits stderr:\n{stderr}"
    );
    ChildRun { lines, opening, ready_after, killed_after }
}

/// Everything the children were told succeeded, over all rounds.
#[derive(Default)]
struct Acknowledged {
    published: HashSet<String>,
    acked: HashSet<String>,
    /// Batches that must be stored all or none.
    keyed_batches: Vec<Vec<String>>,
}

impl Acknowledged {
    fn absorb(&mut self, lines: &[String]) {
        for line in lines {
            if let Some(id) = line.strip_prefix("P ") {
                self.published.insert(id.to_owned());
            } else if let Some(id) = line.strip_prefix("A ") {
                self.acked.insert(id.to_owned());
            } else if let Some(ids) = line.strip_prefix("B ") {
                self.keyed_batches.push(ids.split(',').map(str::to_owned).collect());
            }
        }
    }
}

/// Figures of one check, for the round's report line.
struct Checked {
    in_topic: usize,
    backlog: u64,
}

fn sample<'a>(ids: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<&String> = ids.into_iter().collect();
    v.sort();
    v.truncate(10);
    v
}

/// Opens the broker on `dir` after a kill and checks it against what was acknowledged.
async fn check(dir: &Path, round: u64, acks: &Acknowledged) -> Checked {
    let broker = open(dir).await;
    let (t, q, audit) = (topic(TOPIC), sub(QUEUE), sub(AUDIT));

    // 1. The whole topic, read through a stream subscription from the earliest offset.
    broker.seek(&t, &audit, SeekTo::Earliest).await.unwrap();
    let reader = broker.stream_consumer(&t, &audit).unwrap();
    let mut copies: HashMap<String, u32> = HashMap::new();
    loop {
        let got = reader.receive(1000, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            assert_eq!(
                d.message.data,
                payload(&d.message.id).as_bytes(),
                "round {round}: message {} at {}/{} came back with other data",
                d.message.id,
                d.partition,
                d.offset
            );
            *copies.entry(d.message.id).or_default() += 1;
        }
    }
    drop(reader);
    let missing: Vec<&String> = acks.published.iter().filter(|id| !copies.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "round {round}: {} acknowledged publishes are not in the topic, e.g. {:?}",
        missing.len(),
        sample(missing.iter().copied())
    );
    // Every id was published once and never retried, so a second copy came from recovery.
    let doubled: Vec<&String> = copies.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    assert!(doubled.is_empty(), "round {round}: messages stored twice: {:?}", sample(doubled));
    for batch in &acks.keyed_batches {
        let stored = batch.iter().filter(|id| copies.contains_key(*id)).count();
        assert!(
            stored == 0 || stored == batch.len(),
            "round {round}: {stored} of the {} messages of a one-partition batch are stored: {batch:?}",
            batch.len()
        );
    }

    // 2. The queue. Leases live in memory only, so after the restart every message not acked
    // is deliverable at once: drain them all without acking (the parent's leases vanish when
    // it closes the broker) and look for acked ones among them.
    let mut c = broker.queue_consumer(&t, &q).unwrap();
    c.set_max_in_flight(usize::MAX);
    let mut delivered: Vec<BrokerDelivery> = Vec::new();
    loop {
        let got = c.receive(1000, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        delivered.extend(got);
    }
    let undone: Vec<&String> =
        delivered.iter().map(|d| &d.message.id).filter(|id| acks.acked.contains(*id)).collect();
    assert!(
        undone.is_empty(),
        "round {round}: {} messages whose ack was acknowledged are delivered again, e.g. {:?}",
        undone.len(),
        sample(undone)
    );
    let unknown: Vec<&String> =
        delivered.iter().map(|d| &d.message.id).filter(|id| !copies.contains_key(*id)).collect();
    assert!(
        unknown.is_empty(),
        "round {round}: the queue delivers messages the topic does not hold: {unknown:?}"
    );
    // Nothing unacked is held back: the backlog (everything not acked) is exactly what the
    // drain got. Distinct positions, in case a slow drain outlived a lease.
    let positions: HashSet<(u32, u64)> = delivered.iter().map(|d| (d.partition, d.offset)).collect();
    let backlog = broker.stats(&t, &q).unwrap().backlog;
    assert_eq!(
        backlog,
        positions.len() as u64,
        "round {round}: the queue's backlog and the messages it delivers after a restart differ"
    );
    drop(c);
    broker.close().await.unwrap();
    Checked { in_topic: copies.len(), backlog }
}

fn kills() -> u64 {
    match std::env::var(KILLS) {
        Ok(n) => n.parse().unwrap_or_else(|_| panic!("{KILLS} must be a number, not {n:?}")),
        Err(_) if std::env::var_os("CI").is_some() => 25,
        Err(_) => 40,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged() {
    let kills = kills();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    {
        // The audit subscription exists before any message, so it sees the topic from offset 0.
        let broker = open(dir.path()).await;
        broker.create_topic(&topic(TOPIC), topic_config()).await.unwrap();
        broker.create_subscription(&topic(TOPIC), &sub(QUEUE), queue_config()).await.unwrap();
        broker.create_subscription(&topic(TOPIC), &sub(AUDIT), SubscriptionConfig::stream()).await.unwrap();
        broker.close().await.unwrap();
    }
    let mut acks = Acknowledged::default();
    let (mut in_workload, mut in_open) = (0, 0);
    let mut startup = Duration::from_millis(100);
    for round in 0..kills {
        let run = run_child(dir.path(), round, startup).await;
        startup = run.ready_after.unwrap_or(startup);
        let (p0, a0) = (acks.published.len(), acks.acked.len());
        acks.absorb(&run.lines);
        in_workload += u64::from(run.ready_after.is_some());
        in_open += u64::from(run.opening && run.ready_after.is_none());
        let checked = check(dir.path(), round, &acks).await;
        let when = match run.ready_after {
            Some(ready) => format!("{:>3} ms into the workload", (run.killed_after - ready).as_millis()),
            None if run.opening => "while opening the broker".to_owned(),
            None => "before opening the broker".to_owned(),
        };
        eprintln!(
            "round {round:>2}: killed after {:>3} ms, {when}; +{} published, +{} acked; topic holds {}, backlog {}",
            run.killed_after.as_millis(),
            acks.published.len() - p0,
            acks.acked.len() - a0,
            checked.in_topic,
            checked.backlog,
        );
    }
    assert!(!acks.published.is_empty() && !acks.acked.is_empty(), "the children acknowledged nothing");
    eprintln!(
        "survived {kills} SIGKILLs ({in_workload} in the workload, {in_open} while opening the broker, {} \
         before); checked {} acknowledged publishes and {} acknowledged acks in {:.1} s",
        kills - in_workload - in_open,
        acks.published.len(),
        acks.acked.len(),
        started.elapsed().as_secs_f64()
    );
}
