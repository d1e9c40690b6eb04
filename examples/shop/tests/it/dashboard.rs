//! The dashboard in a real browser (Debian's Chromium through ChromeDriver) with the shop
//! under load: every service, topic, subscription and edge of the shop on the page; the
//! email service stopped turns its subscription congested on the page; a click on an edge
//! shows its latency. Screenshots land in `target/dashboard-screenshots/` (the README's
//! come from there).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::processes::{Deployment, SHOP_EDGES, exporting_to};

/// ChromeDriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // Owned at once, so a failure below still kills it.
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{}/status", driver.url)).send().await.is_ok() {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on {}", driver.url);
    }

    async fn browser(&self, chromium: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(name), png).expect("write screenshot");
}

async fn js(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `check` every half second until it returns `Some` or `limit` passes.
async fn within<T>(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_shop_live_in_a_real_browser() {
    let chromium = switchboard_testkit::require_service!(Chromium);
    let chromedriver = switchboard_testkit::require_service!(ChromeDriver);
    let server = switchboard_testkit::TestServer::start().await;
    let mut deployment = Deployment::start_with_env(&server.url(), exporting_to(&server)).await;
    let mut load = deployment.load(4_000);
    load.rate = 15.0;
    let load = tokio::spawn(shop::load::run(load, |_| {}));

    let driver = Driver::start(chromedriver.path()).await;
    let browser = driver.browser(chromium.path()).await;
    browser.goto(&format!("{}/dashboard/", server.http())).await.expect("open the dashboard");

    // Every node and edge of the shop's diagram is on the page, each edge with traffic.
    let mut nodes: Vec<&str> = SHOP_EDGES
        .iter()
        .flat_map(|e| {
            let (_, ends) = e.split_once(' ').expect("kind");
            let (from, to) = ends.split_once(" -> ").expect("ends");
            [from, to]
        })
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    within(Duration::from_secs(60), "every edge of the shop on the page with a rate", async || {
        let graph = js(&browser, "return window.switchboard && window.switchboard.lastGraph").await;
        let live: Vec<&str> = graph["edges"]
            .as_array()?
            .iter()
            .filter(|e| e["rate"].as_f64().is_some_and(|r| r > 0.0))
            .filter_map(|e| e["id"].as_str())
            .collect();
        SHOP_EDGES.iter().all(|e| live.contains(e)).then_some(())
    })
    .await;
    for id in SHOP_EDGES {
        let row = format!(r#"tr[data-edge-id="{id}"]"#);
        browser.find(Locator::Css(&row)).await.unwrap_or_else(|_| panic!("a row for {id}"));
    }
    for id in &nodes {
        browser
            .find(Locator::Css(&format!(r#"tr[data-node-id="{id}"]"#)))
            .await
            .unwrap_or_else(|_| panic!("a row for {id}"));
    }
    let drawn = js(&browser, "return window.switchboard.cy.elements().map(e => e.id())").await;
    let drawn: Vec<&str> = drawn.as_array().expect("ids").iter().filter_map(Value::as_str).collect();
    for id in SHOP_EDGES.iter().chain(&nodes) {
        assert!(drawn.contains(id), "{id} is drawn on the map");
    }
    screenshot(&browser, "shop-under-load.png").await;

    // A real click on the middle of an edge opens its figures, latency included.
    let edge = "sync service:order -> service:inventory";
    let at = js(
        &browser,
        &format!(
            "const cy = window.switchboard.cy; const p = cy.$id({edge:?}).renderedMidpoint(); \
             const r = cy.container().getBoundingClientRect(); return [Math.round(r.left + p.x), Math.round(r.top + p.y)];"
        ),
    )
    .await;
    let (x, y) = (at[0].as_f64().expect("x"), at[1].as_f64().expect("y"));
    let click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo { duration: None, x, y })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    browser.perform_actions(click).await.expect("click the edge");
    let p99 = within(Duration::from_secs(10), "the clicked edge's p99 in the detail panel", async || {
        let selected =
            browser.find(Locator::Css(&format!(r#"#detail[data-selected-id="{edge}"]"#))).await.ok()?;
        let field = selected.find(Locator::Css(r#"[data-field="p99_ms"]"#)).await.ok()?;
        field.text().await.ok()?.trim_end_matches(" ms").trim().parse::<f64>().ok()
    })
    .await;
    assert!(p99 > 0.0, "p99 {p99} ms");
    screenshot(&browser, "edge-detail.png").await;

    // No email instance: the emails subscription's backlog grows with no consumer, and the
    // page says so.
    let before = js(
        &browser,
        "return window.switchboard.lastGraph.nodes.find(n => n.id === 'subscription:emails/email').congested.length",
    )
    .await;
    assert_eq!(before, json!(0), "the emails subscription is healthy while email runs");
    deployment.kill("email");
    let stopped = tokio::time::Instant::now();
    let flagged = within(Duration::from_secs(90), "the emails subscription flagged congested", async || {
        let item =
            browser.find(Locator::Css(r#"[data-congested-id="subscription:emails/email"]"#)).await.ok()?;
        item.text().await.ok()
    })
    .await;
    assert!(flagged.contains("backlog"), "{flagged}");
    eprintln!("emails/email flagged congested {:?} after the email service stopped", stopped.elapsed());
    screenshot(&browser, "email-stopped-congested.png").await;

    browser.close().await.expect("close the browser");
    load.abort();
    drop(deployment);
    server.shutdown().await.expect("shutdown");
}
