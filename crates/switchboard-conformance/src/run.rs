//! Running a case and reporting it: the case's own cleanup, the notes a case prints, and the
//! test binary's entry point.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use libtest_mimic::{Arguments, Conclusion, Trial};

use crate::{Case, Harness};

/// Whether cases print their notes (measured lateness, deliveries per member, …): libtest-mimic
/// does not capture output, so they are shown only with `--nocapture`, as before.
static NOTES: AtomicBool = AtomicBool::new(false);

/// Prints a case's note when the run asked for `--nocapture`.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::run::print_note(::std::format_args!($($arg)*))
    };
}
pub(crate) use note;

pub(crate) fn print_note(line: std::fmt::Arguments<'_>) {
    if NOTES.load(Ordering::Relaxed) {
        eprintln!("{line}");
    }
}

/// The test binary's `main`: parses libtest's arguments (`--ignored`, `--exact`, filters,
/// `--nocapture` to show the cases' notes, …) and runs `trials`.
pub fn run(trials: Vec<Trial>) -> Conclusion {
    let args = Arguments::from_args();
    NOTES.store(args.nocapture, Ordering::Relaxed);
    libtest_mimic::run(&args, trials)
}

/// A trial that runs `test` on its own multi-threaded tokio runtime (2 workers), as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would; an error fails it,
/// printed with its causes.
pub fn async_trial<F, Fut>(name: impl Into<String>, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    Trial::test(name, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
        runtime.block_on(test()).map_err(|e| format!("{e:?}").into())
    })
}

/// Runs one case against a fresh harness, bounded by its
/// [`case_limit`](crate::Timing::case_limit), then deletes what the case made and shuts the
/// harness down.
///
/// # Errors
/// The case failed, or did not finish in time; the message names the backend and the case.
pub async fn run_case(case: &Case, harness: Arc<dyn Harness>) -> anyhow::Result<()> {
    let limit = harness.timing().case_limit;
    let backend = harness.name().to_owned();
    let prefix = crate::util::new_prefix(case.name, &backend);
    let started = std::time::Instant::now();
    let run = tokio::time::timeout(limit, (case.run)(harness.clone()));
    let result = crate::util::PREFIX.scope(prefix.clone(), run).await;
    delete_created(&prefix, &*harness).await;
    harness.shutdown().await;
    let took = started.elapsed();
    let name = case.name;
    match result {
        Err(_) => anyhow::bail!("[{backend}] {name}: did not finish within {limit:?} (hung?)"),
        Ok(Err(e)) => Err(e.context(format!("[{backend}] {name}: FAILED after {took:.1?}"))),
        Ok(Ok(())) => {
            note!("[{backend}] {name}: passed in {took:.1?}");
            Ok(())
        }
    }
}

/// Deletes the subscriptions and topics the case run with `prefix` made (best effort: a
/// broker that is gone keeps nothing).
async fn delete_created(prefix: &str, harness: &dyn Harness) {
    let created = crate::util::take_created(prefix);
    if created.topics.is_empty() && created.subscriptions.is_empty() {
        return;
    }
    let wait = harness.timing().wait;
    if let Ok(Ok(bus)) = tokio::time::timeout(wait, harness.connect()).await {
        for (topic, sub) in &created.subscriptions {
            let _ = tokio::time::timeout(wait, bus.delete_subscription(topic, sub)).await;
        }
        for topic in &created.topics {
            let _ = tokio::time::timeout(wait, bus.delete_topic(topic)).await;
        }
        let _ = tokio::time::timeout(wait, bus.close()).await;
    }
}
