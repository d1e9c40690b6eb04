//! What every campaign's report has in common: a human summary, a JSON form, and the list of
//! guarantees it saw violated (empty means the campaign passed).

use std::fmt::Display;

use serde::Serialize;

/// A campaign's findings.
pub trait Report: Display + Serialize {
    /// Every guarantee the campaign saw violated, each written for a person; empty when the
    /// campaign passed.
    fn violations(&self) -> Vec<String>;
}

/// Writes the verdict line every summary ends with.
pub(crate) fn verdict(f: &mut std::fmt::Formatter<'_>, violations: &[String]) -> std::fmt::Result {
    if violations.is_empty() {
        writeln!(f, "  verdict: PASS")
    } else {
        writeln!(f, "  verdict: FAIL")?;
        for v in violations {
            writeln!(f, "    - {v}")?;
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch: event logs of different processes share this clock.
pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
