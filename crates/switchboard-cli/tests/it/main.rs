//! End-to-end tests of the `switchboard` binary: `serve` as a real process, the CLI against
//! it, and a SIGKILL restart that loses nothing acknowledged.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod crash_campaign;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A `switchboard serve` child process on free loopback ports.
struct ServeProcess {
    child: Child,
    http: String,
    /// Kept open so the server can keep writing to its stdout.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl ServeProcess {
    fn start(data_dir: &Path) -> ServeProcess {
        let mut child = Command::new(BIN)
            .args(["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // "switchboard serving: http 127.0.0.1:PORT (…), gRPC 127.0.0.1:PORT"
        let http = line
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("unexpected banner: {line:?}"))
            .to_owned();
        ServeProcess { child, http: format!("http://{http}"), _stdout: stdout }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// Runs the CLI against `server`; returns stdout, panicking with stderr on failure.
fn cli(server: &str, args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).args(["--server", server]).output().unwrap();
    assert!(out.status.success(), "switchboard {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn cli_fails(server: &str, args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).args(["--server", server]).output().unwrap();
    assert!(!out.status.success(), "switchboard {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn acknowledged_publishes_and_acks_survive_a_sigkill_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let s = server.http.clone();
    cli(&s, &["topic", "create", "orders", "--partitions", "2"]);
    cli(&s, &["sub", "create", "orders", "email", "--mode", "queue", "--from-beginning"]);
    let published = json_lines(&cli(&s, &["publish", "orders", "a", "b", "c", "d", "--json"]));
    assert_eq!(published[0]["published"], 4);
    let consumed = json_lines(&cli(&s, &["consume", "orders", "email", "--max", "2", "--json"]));
    assert_eq!(consumed.len(), 2);
    let acked: Vec<String> = consumed.iter().map(|m| m["event"]["id"].as_str().unwrap().to_owned()).collect();

    server.sigkill();
    let server = ServeProcess::start(dir.path());
    let s = server.http.clone();
    let again =
        json_lines(&cli(&s, &["consume", "orders", "email", "--max", "10", "--wait-ms", "200", "--json"]));
    let ids: Vec<&str> = again.iter().map(|m| m["event"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "the two unacked messages come back, the acked ones never: {ids:?}");
    assert!(ids.iter().all(|id| !acked.iter().any(|a| a == id)));
    let stats: Value =
        serde_json::from_str(&cli(&s, &["sub", "stats", "orders", "email", "--json"])).unwrap();
    assert_eq!(stats["backlog"], 0);
    assert!(server.sigterm().success(), "SIGTERM shuts down cleanly");
}

#[test]
fn json_lines_from_stdin_dead_letters_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let s = server.http.clone();
    cli(&s, &["topic", "create", "jobs"]);
    cli(&s, &["sub", "create", "jobs", "work", "--from-beginning", "--max-deliveries", "1"]);
    let mut child = Command::new(BIN)
        .args(["publish", "jobs", "--json", "--server", &s])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"n\":1}\n{\"id\":\"x-2\",\"source\":\"/t\",\"type\":\"t\",\"specversion\":\"1.0\",\"data\":\"two\"}\n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&String::from_utf8(out.stdout).unwrap())[0]["published"], 2);

    // Nack both: with max_deliveries 1 they are dead-lettered; redrive brings them back.
    cli(&s, &["consume", "jobs", "work", "--max", "2", "--nack"]);
    // The broker's ticker moves dead letters in the background: wait for it (bounded).
    let mut letters = Value::Null;
    for _ in 0..100 {
        letters = serde_json::from_str(&cli(&s, &["dlq", "list", "jobs", "work", "--json"])).unwrap();
        if letters["messages"].as_array().is_some_and(|m| m.len() == 2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(letters["messages"].as_array().unwrap().len(), 2, "{letters}");
    let moved: Value = serde_json::from_str(&cli(&s, &["dlq", "redrive", "jobs", "work", "--json"])).unwrap();
    assert_eq!(moved["moved"], 2);
    assert_eq!(
        json_lines(&cli(&s, &["consume", "jobs", "work", "--max", "5", "--wait-ms", "500", "--json"])).len(),
        2
    );

    let err = cli_fails(&s, &["publish", "nope", "x"]);
    assert!(err.contains("404") && err.contains("topic nope does not exist"), "{err}");
    let err = cli_fails(&s, &["topic", "create", "t2", "--fsync", "sometimes"]);
    assert!(err.contains("--fsync must be"), "{err}");
    let err = cli_fails(&s, &["topic", "create", "bad/name"]);
    assert!(err.contains("400"), "{err}");
    let err = cli_fails("http://127.0.0.1:9", &["topic", "list"]);
    assert!(err.contains("cannot reach"), "{err}");
    server.sigkill();
}

/// An OTLP/JSON span pair sent with `curl`, as any language's exporter would, shows on
/// `switchboard top`, with what the broker saw of a publish.
#[test]
fn spans_posted_with_curl_appear_in_top() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let span = |service: &str, id: &str, parent: &str, kind: u8| {
        format!(
            r#"{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},
               "scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{id}","parentSpanId":"{parent}",
               "name":"GET /stock","kind":{kind},"startTimeUnixNano":"{now}","endTimeUnixNano":"{}"}}]}}]}}"#,
            now + 4_000_000
        )
    };
    let body = format!(
        r#"{{"resourceSpans":[{},{}]}}"#,
        span("checkout", "eee19b7ec3c1b174", "", 3),
        span("stock", "1111111111111111", "eee19b7ec3c1b174", 2)
    );
    let out = Command::new("curl")
        .args(["-fsS", "-X", "POST", "-H", "content-type: application/json", "--data-binary", &body])
        .arg(format!("{}/v1/traces", server.http))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{}");
    cli(&server.http, &["topic", "create", "orders"]);
    cli(&server.http, &["publish", "orders", "hello"]);

    let top = cli(&server.http, &["top", "--once"]);
    assert!(top.contains("sync     checkout"), "{top}");
    let line = top.lines().find(|l| l.starts_with("sync")).unwrap();
    assert!(line.contains("stock"), "{line}");
    assert!(
        top.lines()
            .any(|l| l.starts_with("publish") && l.contains("unknown_service") && l.contains("orders")),
        "{top}"
    );
    server.sigterm();
}
