//! `cargo run -p example-hello-queue` (set `SWITCHBOARD_URL` to use another backend).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("SWITCHBOARD_URL").unwrap_or_else(|_| "embedded:".into());
    let report = example_hello_queue::run(&url, "jobs", 3, 30).await?;
    for (worker, jobs) in &report.by_worker {
        println!("{worker} handled {} jobs: {jobs:?}", jobs.len());
    }
    Ok(())
}
