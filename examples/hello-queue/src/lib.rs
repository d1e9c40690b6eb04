//! Hello queue: a producer puts jobs on a topic; worker services share them through one
//! queue subscription (competing consumers), each job handled by exactly one worker.
//!
//! The service code below never names a broker: `run` takes a URL, so the same code runs
//! on `embedded:`, `switchboard://`, `amqp://` and `nats://`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;
use switchboard::{
    Bus, Handled, Incoming, Message, Middleware, Router, SubscriptionName, SubscriptionSpec, TopicName,
};
use tower::Layer;

/// Who handled which job.
#[derive(Debug, Default)]
pub struct Report {
    /// Job numbers handled, per worker.
    pub by_worker: BTreeMap<String, Vec<u32>>,
}

impl Report {
    /// Every job handled, sorted (a job handled twice appears twice).
    pub fn all_jobs(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.by_worker.values().flatten().copied().collect();
        all.sort_unstable();
        all
    }
}

/// Publishes `jobs` jobs to `topic` and runs `workers` workers until all are handled.
///
/// # Errors
/// The broker is unreachable, or the jobs are not all handled within 60 s.
pub async fn run(url: &str, topic: &str, workers: usize, jobs: u32) -> anyhow::Result<Report> {
    let topic = TopicName::new(topic)?;
    let report = Arc::new(Mutex::new(Report::default()));
    let mut running = Vec::new();
    for w in 0..workers {
        // Each worker is its own service with its own connection, as in production.
        let bus = Bus::connect(url).await.context("connecting a worker")?;
        let name = format!("worker-{w}");
        let seen = report.clone();
        let handler = tower::service_fn(move |job: Incoming| {
            let (seen, name) = (seen.clone(), name.clone());
            async move {
                let n: u32 = String::from_utf8_lossy(&job.message.data).parse().unwrap_or(u32::MAX);
                tokio::time::sleep(Duration::from_millis(2)).await; // the "work"
                seen.lock().by_worker.entry(name).or_default().push(n);
                Handled::Ok(vec![])
            }
        });
        let spec = SubscriptionSpec::queue(SubscriptionName::new("workers")?).with_prefetch(4);
        let router = Router::new(bus.clone())
            .route("work", topic.clone(), spec, Middleware::default().layer(handler))
            .start()
            .await?;
        running.push((router, bus));
    }
    let producer = Bus::connect(url).await.context("connecting the producer")?;
    for n in 0..jobs {
        producer.publish(&topic, Message::new("/hello-queue", "job.created", n.to_string())).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while report.lock().all_jobs().len() < jobs as usize {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "jobs not all handled within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (router, bus) in running {
        router.shutdown().await?;
        bus.close().await?;
    }
    producer.close().await?;
    let report = std::mem::take(&mut *report.lock());
    Ok(report)
}
