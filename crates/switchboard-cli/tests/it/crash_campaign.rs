//! A reduced crash campaign (switchboard-campaign) in the test suite: the real `switchboard`
//! binary is SIGKILLed and restarted four times under a writer and a reader process, and no
//! acknowledged publish may be lost, no confirmed ack undone, no promised order broken.
//!
//! The writer and reader must be processes of their own, and a test cannot name the
//! campaign's binary, so this test binary plays them: the campaign starts it again running
//! only [`crash_campaign_worker`], with the worker's spec in the environment.

use std::ffi::OsString;
use std::time::Duration;

use switchboard_campaign::{CrashConfig, Launcher, Report, WorkerSpec};

/// The worker entry point's name as libtest knows it.
const WORKER_TEST: &str = "crash_campaign::crash_campaign_worker";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// The writer or reader of the campaign below when started as one; otherwise it returns at
/// once (it is a test only so that libtest can run it by name).
#[test]
fn crash_campaign_worker() {
    let Some(spec) = WorkerSpec::from_env() else { return };
    runtime().block_on(spec.unwrap().run()).unwrap();
}

#[test]
fn nothing_acknowledged_is_lost_across_sigkills_of_the_server() {
    let exe = std::env::current_exe().unwrap();
    let launcher = Launcher::new(exe, |_| {
        ["--exact", WORKER_TEST, "--nocapture", "--test-threads", "1"].map(OsString::from).to_vec()
    });
    let mut config =
        CrashConfig::new(super::BIN.into(), launcher).kills(4).per_kill(Duration::from_secs(5)).rate(400);
    // A failure prints its seed; this replays that kill schedule.
    if let Ok(seed) = std::env::var("SWITCHBOARD_CRASH_SEED") {
        config = config.seed(seed.parse().unwrap());
    }
    let report = runtime().block_on(switchboard_campaign::crash::run(config)).unwrap();
    eprint!("{report}");
    assert!(report.violations().is_empty(), "{report}");
    assert_eq!(report.kills_survived, 4);
    assert!(report.publishes.acked > 1000, "too little was checked: {report}");
}
