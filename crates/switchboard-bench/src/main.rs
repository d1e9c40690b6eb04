//! `switchboard-bench`: the same scenarios against Switchboard and the brokers a user would
//! pick instead, in one run on one machine, with the machine's own disk limits beside them.
//!
//! ```text
//! cargo build --release --bin switchboard --bin switchboard-bench
//! target/release/switchboard-bench            # every target and scenario, 3 runs each
//! target/release/switchboard-bench --quick    # 1 short run each, to try it out
//! ```
//!
//! Prints the table (markdown), and writes `results.md`, `results.json` and `chart.svg` (and
//! `chart.png` where `rsvg-convert` is installed) to `--out`, and `latency-curve.svg` when
//! scenario D ran at several rates (`--rate 2000,10000,30000`, `--ramp` to go on until each
//! target falls behind). A peer that does not answer is
//! skipped with a line saying why. Nothing here fails on a figure.

mod ceiling;
mod chart;
mod cpu;
mod payload;
mod report;
mod scenario;
mod stages;
mod target;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use report::{Cell, Report, TargetInfo};
use scenario::{Params, Scenario};

// The allocator the `switchboard` binary ships with, so the in-process figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Compares Switchboard with RabbitMQ, NATS JetStream and Redis Streams on this machine.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Targets to run (comma-separated); all when not given.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(target::ALL))]
    targets: Vec<String>,
    /// Scenarios to run (comma-separated); all when not given.
    #[arg(long, value_delimiter = ',', ignore_case = true)]
    scenarios: Vec<Scenario>,
    /// Measured runs per target and scenario (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per throughput or latency measurement.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Messages published and replayed in scenario C.
    #[arg(long, default_value_t = 1_000_000)]
    replay_count: u64,
    /// Offered rates of scenario D, msgs/s (comma-separated: one D table per rate, and a
    /// latency curve across them).
    #[arg(long, value_delimiter = ',', default_values_t = [2_000])]
    rate: Vec<u64>,
    /// After the rates of `--rate`, keep offering D 1.5 times more until a target no longer
    /// keeps up (p99 over 50 ms, or a run fails): the highest rate each sustains.
    #[arg(long)]
    ramp: bool,
    /// Publishers in scenarios A, B and E.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Unconfirmed publishes each publisher keeps outstanding.
    #[arg(long, default_value_t = 128)]
    window: usize,
    /// Consumers of the subscription in scenarios A and B.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Unacked messages each consumer may hold.
    #[arg(long, default_value_t = 100)]
    prefetch: u32,
    /// One 2-second run of each, 100,000 messages to replay: to try the bench out.
    #[arg(long)]
    quick: bool,
    /// Where results.md, results.json and chart.svg go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// RabbitMQ.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// NATS with JetStream.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The machine's Redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// `redis-server`, started privately with `appendfsync always` for the equal-durability row.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// The `switchboard` binary to start as `switchboard serve` (default: next to this one).
    #[arg(long)]
    switchboard_bin: Option<PathBuf>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

fn now_rfc3339() -> String {
    switchboard_core::Timestamp::from_system_time(std::time::SystemTime::now()).to_rfc3339()
}

/// The highest rate `--ramp` offers, msgs/s.
const RAMP_CEILING: u64 = 1_000_000;

/// Runs scenario `s` `runs` times on `t` and gathers the figures, the broker's stage
/// histograms and the server's CPU time around them.
async fn measure(
    t: &dyn target::Target,
    s: Scenario,
    params: &Params,
    runs: usize,
    rate: Option<u64>,
) -> Cell {
    let mut figures = Vec::new();
    let mut error = None;
    let stages_before = t.stages().await.ok().flatten();
    let cpu_before = t.server_pid().and_then(|pid| cpu::process_cpu(pid).ok());
    let at = rate.map(|r| format!(" at {r} msgs/s")).unwrap_or_default();
    for run in 1..=runs {
        match scenario::run(t, s, params, run).await {
            Ok(f) => {
                println!(
                    "{:<26} {s:?}{at} run {run}: {} / {} msgs/s{}",
                    t.name(),
                    report::rate(f.publish_per_sec),
                    report::rate(f.consume_per_sec),
                    f.latency
                        .map(|l| format!(", p50 {:.2} ms p99 {:.2} ms", l.p50, l.p99))
                        .unwrap_or_default()
                );
                figures.push(f);
            }
            Err(e) => {
                println!("{:<26} {s:?}{at} run {run}: failed: {e:#}", t.name());
                error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let median = report::medians(&figures);
    // Server CPU per message moved: the runs' consumed (or replayed) messages, all of the
    // server's CPU time in between (topic set-up and drain included).
    let moved: f64 = figures.iter().filter_map(|f| f.consume_per_sec).sum::<f64>() * params.secs;
    let server_cpu_us_per_msg = match (cpu_before, t.server_pid()) {
        (Some(before), Some(pid)) if moved > 0.0 => {
            cpu::process_cpu(pid).ok().map(|after| after.saturating_sub(before).as_secs_f64() * 1e6 / moved)
        }
        _ => None,
    };
    let stages = match (stages_before, t.stages().await.ok().flatten()) {
        (Some(before), Some(after)) => stages::between(&before, &after),
        _ => Vec::new(),
    };
    Cell {
        target: t.name().to_owned(),
        scenario: s,
        rate,
        runs: figures,
        median,
        error,
        stages,
        server_cpu_us_per_msg,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        (args.runs, args.secs, args.replay_count) = (1, 2.0, 100_000);
    }
    let scenarios = if args.scenarios.is_empty() { Scenario::ALL.to_vec() } else { args.scenarios.clone() };
    let params = Params {
        secs: args.secs,
        publishers: args.publishers,
        window: args.window,
        consumers: args.consumers,
        prefetch: args.prefetch,
        replay_count: args.replay_count,
        rate: args.rate.first().copied().unwrap_or(2_000),
    };
    let switchboard_bin = match &args.switchboard_bin {
        Some(p) => p.clone(),
        None => switchboard_campaign::default_server_bin()?,
    };
    let machine = machine();
    println!("switchboard-bench on {machine}");

    let ceiling = match ceiling::measure(&std::env::current_dir()?) {
        Ok(c) => Some(c),
        Err(e) => {
            println!("machine ceiling not measured: {e:#}");
            None
        }
    };
    let endpoints = target::Endpoints {
        amqp: args.amqp.clone(),
        nats: args.nats.clone(),
        redis: args.redis.clone(),
        redis_server_bin: args.redis_server.clone(),
        switchboard_bin,
        only: args.targets.clone(),
    };
    let reachable = target::reach(&endpoints).await;
    for s in &reachable.skipped {
        println!("{s}");
    }

    let mut cells = Vec::new();
    for t in &reachable.targets {
        // Warm-up: connections, JIT-free but cache- and allocator-warm; discarded.
        let warm = Params { secs: 1.0, ..params.clone() };
        if let Err(e) = scenario::run(t.as_ref(), Scenario::A, &warm, 0).await {
            println!("{}: warm-up failed: {e:#}", t.name());
        }
        for &s in &scenarios {
            if !t.supports(s.shape()) {
                continue;
            }
            if s != Scenario::D {
                cells.push(measure(t.as_ref(), s, &params, args.runs, None).await);
                continue;
            }
            // D at each rate asked for, then (with --ramp) ever higher until the target no
            // longer keeps up.
            let mut last = 0;
            for &rate in &args.rate {
                let p = Params { rate, ..params.clone() };
                cells.push(measure(t.as_ref(), s, &p, args.runs, Some(rate)).await);
                last = rate;
            }
            while args.ramp && last > 0 {
                let sustained = cells.last().is_some_and(report::sustained);
                if !sustained || last >= RAMP_CEILING {
                    break;
                }
                last = (last * 3 / 2).min(RAMP_CEILING);
                let p = Params { rate: last, ..params.clone() };
                cells.push(measure(t.as_ref(), s, &p, args.runs, Some(last)).await);
            }
        }
    }

    let report = Report {
        date: now_rfc3339(),
        machine,
        ceiling,
        params,
        runs: args.runs,
        targets: reachable
            .targets
            .iter()
            .map(|t| TargetInfo { name: t.name().to_owned(), durability: t.durability(), setup: t.setup() })
            .collect(),
        skipped: reachable.skipped.clone(),
        cells,
    };
    let markdown = report.markdown();
    println!("\n{markdown}");
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("results.md"), &markdown)?;
    std::fs::write(args.out.join("results.json"), serde_json::to_string_pretty(&report)?)?;
    let svg = args.out.join("chart.svg");
    std::fs::write(&svg, chart::svg(&report))?;
    if let Some(curve) = chart::latency_curve(&report) {
        std::fs::write(args.out.join("latency-curve.svg"), curve)?;
        println!("wrote {}/latency-curve.svg", args.out.display());
    }
    println!("wrote {0}/results.md, {0}/results.json and {0}/chart.svg", args.out.display());
    // A PNG too where librsvg's converter is installed (Debian: librsvg2-bin).
    let png = args.out.join("chart.png");
    match std::process::Command::new("rsvg-convert").arg("-o").arg(&png).arg(&svg).status() {
        Ok(s) if s.success() => println!("wrote {}", png.display()),
        _ => println!("no chart.png: rsvg-convert (librsvg2-bin) is not installed"),
    }
    Ok(())
}
