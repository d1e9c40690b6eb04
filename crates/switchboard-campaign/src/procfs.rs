//! What the kernel says about the server process: resident memory and open files, read from
//! `/proc/<pid>` so the measurement needs no cooperation from the server.

use serde::Serialize;

/// Memory figures of a process, KiB, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Memory {
    /// Resident set size now (`VmRSS`).
    pub(crate) rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub(crate) hwm_kib: u64,
    /// Anonymous resident memory (`RssAnon`): the heap, what a leak grows.
    pub(crate) anon_kib: u64,
    /// File-backed resident memory (`RssFile`): mapped files, which the kernel may drop.
    pub(crate) file_kib: u64,
    /// Threads (`Threads`).
    pub(crate) threads: u64,
}

/// Reads `/proc/<pid>/status`.
pub(crate) fn memory(pid: u32) -> std::io::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut m = Memory::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let number = || value.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match name {
            "VmRSS" => m.rss_kib = number(),
            "VmHWM" => m.hwm_kib = number(),
            "RssAnon" => m.anon_kib = number(),
            "RssFile" => m.file_kib = number(),
            "Threads" => m.threads = number(),
            _ => {}
        }
    }
    Ok(m)
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`).
pub(crate) fn open_fds(pid: u32) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The soft and hard limits on open files of a process (`Max open files` in
/// `/proc/<pid>/limits`), as written there (`unlimited` is possible).
pub(crate) fn nofile_limits(pid: &str) -> std::io::Result<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    // "Max open files            <soft>               <hard>               files"
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or("unknown").to_owned();
    Ok((field(3), field(4)))
}

/// Whether this process runs as root (`Uid` in `/proc/self/status`), which mounting needs.
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .is_some_and(|effective| effective == "0")
    })
}
