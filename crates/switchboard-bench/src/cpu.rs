//! CPU time a server process used, from `/proc/<pid>/stat`: the cost per message of a
//! scenario is that time divided by the messages it moved, a figure that depends much less on
//! the machine's other load than the throughput does.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): fixed at 100 by the kernel's ABI
/// on x86 and arm64, whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;

/// User plus system time `pid` has used so far, all threads.
pub(crate) fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    parse_stat(&stat).context("parsing /proc/<pid>/stat")
}

fn parse_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `fields[0]` is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_add_up() {
        let stat = "4242 (switch board) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(stat), Some(Duration::from_millis(1750)));
        assert_eq!(parse_stat("garbage"), None);
        assert!(process_cpu(std::process::id()).is_ok(), "this process has a stat file");
    }
}
