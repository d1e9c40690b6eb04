//! The READMEs say what the suite checks: the workspace README's backend × capability table
//! is built here from what each target declares (each target's
//! `declared_capabilities_are_the_backends` checks those against the connected backend), and
//! this crate's README lists every case of `CASES`, in order.

use libtest_mimic::Trial;
use switchboard_conformance::{CASES, Target};
use switchboard_core::contract::{Capabilities, Capability};

const BEGIN: &str = "<!-- capabilities:begin -->";
const END: &str = "<!-- capabilities:end -->";

fn table(columns: &[(&str, Capabilities)]) -> String {
    let mut out = String::from("| capability |");
    for (name, _) in columns {
        out.push_str(&format!(" `{name}` |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(columns.len()));
    out.push('\n');
    for flag in Capability::ALL {
        out.push_str(&format!("| `{flag}` |"));
        for (_, caps) in columns {
            out.push_str(if caps.contains(flag) { " yes |" } else { " no |" });
        }
        out.push('\n');
    }
    out
}

/// The URL form the README heads each target's column with.
fn scheme(target: &str) -> &str {
    match target {
        "embedded" => "embedded:<dir>",
        "remote" => "switchboard://",
        "amqp" => "amqp://",
        "nats" => "nats://",
        other => other,
    }
}

fn readme_capability_table_matches_the_backends(columns: &[(&str, Capabilities)]) -> Result<(), String> {
    let expected = table(columns);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let start = readme.find(BEGIN).ok_or("the README does not mark its capability table")? + BEGIN.len();
    let end = readme.find(END).ok_or("the README does not mark the end of its capability table")?;
    if readme[start..end].trim() != expected.trim() {
        return Err(format!("README capability table is stale; it should be:\n{expected}"));
    }
    Ok(())
}

fn readme_lists_every_case() -> Result<(), String> {
    let readme = include_str!("../../README.md");
    let listed: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| case |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.trim_start_matches('|').split('|').next().map(str::trim))
        .collect();
    let cases: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    if listed != cases {
        return Err(format!("the crate README's case table lists {listed:?}, but CASES are {cases:?}"));
    }
    Ok(())
}

pub(crate) fn trials(targets: &[Target]) -> Vec<Trial> {
    let columns: Vec<(&'static str, Capabilities)> =
        targets.iter().map(|t| (scheme(t.name()), t.capabilities())).collect();
    vec![
        Trial::test("readme::readme_capability_table_matches_the_backends", move || {
            Ok(readme_capability_table_matches_the_backends(&columns)?)
        }),
        Trial::test("readme::readme_lists_every_case", || Ok(readme_lists_every_case()?)),
    ]
}
