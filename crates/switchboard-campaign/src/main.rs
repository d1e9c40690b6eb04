//! `switchboard-campaign`: reliability campaigns against a real `switchboard serve`.
//!
//! Each subcommand prints a human summary (on stderr with `--json`, which prints the JSON
//! report on stdout) and exits with status 1 when a guarantee was violated, 2 when the
//! harness itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;
use switchboard_campaign::{
    CrashConfig, DiskFullConfig, Launcher, LoadConfig, Report, Role, SlowConsumerConfig, WorkerSpec,
};

#[derive(Parser)]
#[command(name = "switchboard-campaign", about = "Reliability campaigns against `switchboard serve`.")]
struct Cli {
    /// The `switchboard` binary to test [default: `switchboard` next to this executable].
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// Print the report as JSON on stdout (the summary goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SIGKILL and restart the server under a writer and a reader; check nothing
    /// acknowledged is lost.
    Crash(CrashArgs),
    /// Fill the data directory's disk (a tmpfs; needs root) and check the errors and the
    /// recovery.
    DiskFull(DiskFullArgs),
    /// A consumer that never acks while the backlog grows: check the server's memory stays
    /// flat.
    SlowConsumer(SlowArgs),
    /// Many topics and concurrent clients: throughput, errors, memory, open files.
    Load(LoadArgs),
    /// Every campaign with moderate settings.
    All,
    /// The crash campaign's writer process (started by `crash`).
    #[command(hide = true)]
    CrashWriter,
    /// The crash campaign's reader process (started by `crash`).
    #[command(hide = true)]
    CrashReader,
}

#[derive(clap::Args)]
struct CrashArgs {
    /// SIGKILLs to survive.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// Mean time between kills (e.g. `5s`, `1500ms`); each interval is 0.5× to 1.5× of it.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration_per_kill: Duration,
    /// Seed of the kill schedule [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Messages per second the writer aims for.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Keys the writer publishes concurrently.
    #[arg(long, default_value_t = 8)]
    keys: u32,
    /// Keep data, server log and event logs here.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DiskFullArgs {
    /// Size of the tmpfs, MiB.
    #[arg(long, default_value_t = 16)]
    size_mib: u64,
    /// Size to grow it to, MiB.
    #[arg(long, default_value_t = 64)]
    grow_to_mib: u64,
}

#[derive(clap::Args)]
struct SlowArgs {
    /// Backlog to build, MiB.
    #[arg(long, default_value_t = 1024)]
    backlog_mib: u64,
    /// Allowed RSS growth after the first 10% of the backlog, MiB.
    #[arg(long, default_value_t = 64)]
    bound_mib: u64,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Topics (each with a queue subscription).
    #[arg(long, default_value_t = 1000)]
    topics: usize,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// How long the clients publish (e.g. `20s`).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// The server's open-files limit (0: leave it as inherited).
    #[arg(long, default_value_t = 65_536)]
    nofile: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) =
        s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("{s:?}: the unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("switchboard-campaign: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; whether every guarantee held.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let bin = match cli.server_bin {
        Some(b) => b,
        None => switchboard_campaign::default_server_bin()?,
    };
    let json = cli.json;
    match cli.command {
        Command::CrashWriter => worker(Role::Writer).await.map(|()| true),
        Command::CrashReader => worker(Role::Reader).await.map(|()| true),
        Command::Crash(a) => {
            let mut config = CrashConfig::new(bin, Launcher::current_exe()?)
                .kills(a.kills)
                .per_kill(a.duration_per_kill)
                .rate(a.rate);
            config.keys = a.keys;
            config.work_dir = a.work_dir;
            if let Some(seed) = a.seed {
                config = config.seed(seed);
            }
            Ok(show(&switchboard_campaign::crash::run(config).await?, json))
        }
        Command::DiskFull(a) => {
            let mut config = DiskFullConfig::new(bin);
            config.size_mib = a.size_mib;
            config.grow_to_mib = a.grow_to_mib;
            Ok(show(&switchboard_campaign::disk_full::run(config).await?, json))
        }
        Command::SlowConsumer(a) => {
            let mut config = SlowConsumerConfig::new(bin);
            config.backlog_mib = a.backlog_mib;
            config.bound_mib = a.bound_mib;
            Ok(show(&switchboard_campaign::slow_consumer::run(config).await?, json))
        }
        Command::Load(a) => {
            let mut config = LoadConfig::new(bin);
            config.topics = a.topics;
            config.clients = a.clients;
            config.duration = a.duration;
            config.nofile = (a.nofile > 0).then_some(a.nofile);
            Ok(show(&switchboard_campaign::load::run(config).await?, json))
        }
        Command::All => all(bin, json).await,
    }
}

/// Every campaign with moderate settings; one JSON object with every report.
async fn all(bin: PathBuf, json: bool) -> anyhow::Result<bool> {
    #[derive(Serialize)]
    struct All {
        crash: switchboard_campaign::CrashReport,
        disk_full: switchboard_campaign::DiskFullReport,
        slow_consumer: switchboard_campaign::SlowConsumerReport,
        load: switchboard_campaign::LoadReport,
    }
    let crash =
        CrashConfig::new(bin.clone(), Launcher::current_exe()?).kills(5).per_kill(Duration::from_secs(4));
    let crash = switchboard_campaign::crash::run(crash).await?;
    eprint!("{crash}");
    let disk_full = switchboard_campaign::disk_full::run(DiskFullConfig::new(bin.clone())).await?;
    eprint!("{disk_full}");
    let mut slow = SlowConsumerConfig::new(bin.clone());
    slow.backlog_mib = 512;
    let slow_consumer = switchboard_campaign::slow_consumer::run(slow).await?;
    eprint!("{slow_consumer}");
    let mut load = LoadConfig::new(bin);
    load.duration = Duration::from_secs(15);
    let load = switchboard_campaign::load::run(load).await?;
    eprint!("{load}");
    let passed = [crash.violations(), disk_full.violations(), slow_consumer.violations(), load.violations()]
        .iter()
        .all(Vec::is_empty);
    let report = All { crash, disk_full, slow_consumer, load };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!("all campaigns: {}", if passed { "PASS" } else { "FAIL" });
    Ok(passed)
}

/// Prints a report; whether it passed.
fn show<R: Report>(report: &R, json: bool) -> bool {
    if json {
        eprint!("{report}");
        match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("switchboard-campaign: cannot encode the report: {e}"),
        }
    } else {
        print!("{report}");
    }
    report.violations().is_empty()
}

/// A hidden worker subcommand: the spec comes from the environment.
async fn worker(role: Role) -> anyhow::Result<()> {
    let spec = WorkerSpec::from_env().ok_or_else(|| {
        anyhow::anyhow!(
            "this subcommand is started by `crash`, with {}",
            switchboard_campaign::crash::WORKER_ENV
        )
    })??;
    anyhow::ensure!(spec.role == role, "the worker spec is for the {:?}", spec.role);
    spec.run().await
}
