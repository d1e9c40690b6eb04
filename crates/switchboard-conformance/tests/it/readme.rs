//! The README's backend × capability table says what the backends declare: this test builds
//! the table from the backends themselves and compares it with the README's.

const BEGIN: &str = "<!-- capabilities:begin -->";
const END: &str = "<!-- capabilities:end -->";

fn table(columns: &[(&str, switchboard_core::contract::Capabilities)]) -> String {
    let mut out = String::from("| capability |");
    for (name, _) in columns {
        out.push_str(&format!(" `{name}` |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(columns.len()));
    out.push('\n');
    let Some((_, first)) = columns.first() else { return out };
    for (i, (flag, _)) in first.flags().iter().enumerate() {
        out.push_str(&format!("| `{flag}` |"));
        for (_, caps) in columns {
            out.push_str(if caps.flags()[i].1 { " yes |" } else { " no |" });
        }
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_capability_table_matches_the_backends() {
    let mut columns = Vec::new();
    for (scheme, harness) in [
        ("embedded:<dir>", crate::embedded::harness().await),
        ("switchboard://", crate::remote::harness().await),
        ("amqp://", crate::amqp::harness().await),
        ("nats://", crate::nats::harness().await),
    ] {
        let backend = harness.connect().await.expect("connect");
        columns.push((scheme, backend.capabilities()));
        let _ = backend.close().await;
        harness.shutdown().await;
    }
    let expected = table(&columns);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let start = readme.find(BEGIN).expect("the README marks its capability table") + BEGIN.len();
    let end = readme.find(END).expect("the README marks the end of its capability table");
    assert_eq!(
        readme[start..end].trim(),
        expected.trim(),
        "README capability table is stale; it should be:\n{expected}"
    );
}
