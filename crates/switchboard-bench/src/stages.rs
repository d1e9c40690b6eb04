//! Where a message's time went inside the broker during one target's runs: the broker's
//! stage histograms (`switchboard_broker::Stage`) read before and after, and the difference
//! summarised. `switchboard serve` is read from its `/metrics`, the embedded broker directly.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use switchboard_broker::{BUCKET_BOUNDS_US, Stage, StageSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One stage over one target's runs of one scenario.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StageFigure {
    pub(crate) stage: &'static str,
    /// Messages (or batches, or acks) timed.
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    /// Upper bounds of the buckets holding p50, p99 and p99.9 (`None`: above 1 s).
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) p999_ms: Option<f64>,
}

/// What happened between two readings, per stage with anything recorded.
pub(crate) fn between(before: &[StageSnapshot], after: &[StageSnapshot]) -> Vec<StageFigure> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.stage == a.stage);
            let buckets: Vec<u64> = a
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(b.and_then(|b| b.buckets.get(i)).copied().unwrap_or(0)))
                .collect();
            let sum_ns = a.sum_ns.saturating_sub(b.map_or(0, |b| b.sum_ns));
            let d = StageSnapshot { stage: a.stage, buckets, sum_ns };
            let count = d.count();
            let ms = |q: f64| d.quantile_upper_us(q).map(|us| us as f64 / 1000.0);
            (count > 0).then(|| StageFigure {
                stage: a.stage.as_str(),
                count,
                mean_ms: d.sum_ns as f64 / count as f64 / 1e6,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
            })
        })
        .collect()
}

/// The stage histograms of the `switchboard serve` whose HTTP listener is `http`.
pub(crate) async fn scrape(http: std::net::SocketAddr) -> Result<Vec<StageSnapshot>> {
    let mut stream = tokio::net::TcpStream::connect(http).await.context("connecting to /metrics")?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else { bail!("no HTTP response from /metrics") };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {}", head.lines().next().unwrap_or_default());
    }
    Ok(parse(body))
}

/// Reads `switchboard_stage_latency_seconds` out of an OpenMetrics text.
fn parse(text: &str) -> Vec<StageSnapshot> {
    const NAME: &str = "switchboard_stage_latency_seconds";
    Stage::ALL
        .iter()
        .map(|&stage| {
            let label = format!("stage=\"{}\"", stage.as_str());
            // `None`: a bound the text does not list, which holds what the one below holds.
            let mut cumulative: Vec<Option<u64>> = vec![None; BUCKET_BOUNDS_US.len() + 1];
            let mut sum_ns = 0;
            for line in text.lines().filter(|l| l.starts_with(NAME) && l.contains(&label)) {
                let Some((series, value)) = line.rsplit_once(' ') else { continue };
                if series.starts_with(&format!("{NAME}_sum")) {
                    sum_ns = (value.parse::<f64>().unwrap_or(0.0) * 1e9) as u64;
                } else if let Some(le) = series.split("le=\"").nth(1).and_then(|r| r.split('"').next()) {
                    let index = if le == "+Inf" {
                        Some(BUCKET_BOUNDS_US.len())
                    } else {
                        let us = (le.parse::<f64>().unwrap_or(f64::NAN) * 1e6).round() as u64;
                        BUCKET_BOUNDS_US.iter().position(|&b| b == us)
                    };
                    if let (Some(i), Ok(n)) = (index, value.parse()) {
                        cumulative[i] = Some(n);
                    }
                }
            }
            let mut below = 0;
            let buckets = cumulative
                .iter()
                .map(|c| {
                    let up_to = c.unwrap_or(below);
                    let n = up_to.saturating_sub(below);
                    below = up_to;
                    n
                })
                .collect();
            StageSnapshot { stage, buckets, sum_ns }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_histograms_read_back_and_subtract() {
        let text = "\
# TYPE switchboard_stage_latency_seconds histogram
switchboard_stage_latency_seconds_bucket{stage=\"write\",le=\"0.00001\"} 1
switchboard_stage_latency_seconds_bucket{stage=\"write\",le=\"0.00002\"} 3
switchboard_stage_latency_seconds_bucket{stage=\"write\",le=\"0.002\"} 4
switchboard_stage_latency_seconds_bucket{stage=\"write\",le=\"+Inf\"} 4
switchboard_stage_latency_seconds_sum{stage=\"write\"} 0.002
switchboard_stage_latency_seconds_count{stage=\"write\"} 4
";
        let after = parse(text);
        let write = after.iter().find(|s| s.stage == Stage::Write).unwrap();
        assert_eq!((write.buckets[0], write.buckets[1], write.buckets[13], write.count()), (1, 2, 1, 4));
        assert_eq!(write.sum_ns, 2_000_000);
        let before = parse(
            &text
                .replace("} 3\n", "} 1\n")
                .replace("0.002\"} 4", "0.002\"} 2")
                .replace("+Inf\"} 4", "+Inf\"} 2"),
        );
        let figures = between(&before, &after);
        assert_eq!(figures.len(), 1, "only stages with something recorded: {figures:?}");
        let f = &figures[0];
        assert_eq!((f.stage, f.count), ("write", 2));
        assert_eq!(f.p50_ms, Some(0.02));
    }
}
