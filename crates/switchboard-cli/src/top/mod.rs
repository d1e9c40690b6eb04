//! `switchboard top`: the service graph of a running server in the terminal — every edge
//! with its rate, errors and latency, every subscription with its backlog, lag and in-flight
//! count, and what is congested — refreshed live, for people on ssh. `--once` prints one
//! snapshot as text instead (for scripts and pipes).

mod model;
mod render;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};

use crate::remote::{Client, Connection};
use model::Graph;

/// Flags of `switchboard top`.
#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// The window the figures cover: 1m, 5m or 1h.
    #[arg(long, default_value = "1m", value_parser = ["1m", "5m", "1h"])]
    window: String,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Print one snapshot as text and exit.
    #[arg(long)]
    once: bool,
}

async fn fetch(client: &Client, window: &str) -> anyhow::Result<Graph> {
    let value = client.get(&format!("/v1/graph?window={window}")).await?;
    serde_json::from_value(value).context("the server's graph is not in the expected shape")
}

pub(crate) async fn run(c: &Connection, args: TopArgs) -> anyhow::Result<()> {
    let client = Client::new(c)?;
    let source = c.server().to_owned();
    if args.once {
        print!("{}", render::text(&fetch(&client, &args.window).await?, &source));
        return Ok(());
    }
    let interval = Duration::from_secs_f64(args.interval.clamp(0.2, 3600.0));
    let mut terminal = ratatui::init();
    let result = live(&mut terminal, &client, &source, args.window, interval).await;
    ratatui::restore();
    result
}

async fn live(
    terminal: &mut ratatui::DefaultTerminal,
    client: &Client,
    source: &str,
    mut window: String,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut graph = Graph::default();
    let mut status = String::from("connecting…");
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            match fetch(client, &window).await {
                Ok(g) => {
                    graph = g;
                    status.clear();
                }
                // Keep the last picture and say why it is old.
                Err(e) => status = format!("refresh failed: {e:#}"),
            }
            next = Instant::now() + interval;
        }
        terminal.draw(|f| render::frame(f, &graph, source, &status))?;
        let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(250));
        // Polling for keys blocks, so it runs off the async workers.
        let key = tokio::task::spawn_blocking(move || -> std::io::Result<Option<KeyCode>> {
            if event::poll(wait)?
                && let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                return Ok(Some(k.code));
            }
            Ok(None)
        })
        .await??;
        match key {
            Some(KeyCode::Char('q') | KeyCode::Esc) => return Ok(()),
            Some(KeyCode::Char('w')) => {
                window = match window.as_str() {
                    "1m" => "5m",
                    "5m" => "1h",
                    _ => "1m",
                }
                .to_owned();
                next = Instant::now();
            }
            Some(KeyCode::Char('r')) => next = Instant::now(),
            _ => {}
        }
    }
}
