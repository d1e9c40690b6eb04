//! `cargo run -p example-hello-log` (set `SWITCHBOARD_URL` to use another backend).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("SWITCHBOARD_URL").unwrap_or_else(|_| "embedded:".into());
    let report = example_hello_log::run(&url, "orders", 20).await?;
    println!("billing replayed   {:?}", report.billing);
    println!("analytics replayed {:?}", report.analytics);
    Ok(())
}
