//! Typed, documented, defaulted configuration of a log.

use serde::{Deserialize, Serialize};

/// When appended data is fsynced, and so when it becomes visible and acknowledged.
///
/// In configuration files: `"always"`, `"never"` or `{ "interval": { "ms": 200 } }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Every append returns only after an fsync covering it succeeded; concurrent appends
    /// share fsyncs (group commit). Readers never see data that is not durable.
    #[default]
    Always,
    /// Appends return after the write; the owner calls [`Log::sync_if_due`](crate::Log)
    /// periodically and the log fsyncs in the background when `ms` milliseconds have passed
    /// since the last fsync.
    Interval {
        /// Minimum time between background fsyncs.
        ms: u64,
    },
    /// Appends return after the write and the log never fsyncs them on its own (only when a
    /// segment is sealed, in the background, and on [`Log::sync`](crate::Log)). A power loss
    /// may lose recent appends.
    Never,
}

/// How a log stores data. Every field has a default, so a configuration file needs only the
/// fields it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// When appends are fsynced. Default: [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// Roll to a new segment before an append that would make the active one exceed this
    /// many bytes (a bigger batch still goes, alone, into a fresh segment). Default: 128 MiB.
    pub segment_max_bytes: u64,
    /// Roll to a new segment when the active segment's first record is older than this.
    /// Default: 24 h.
    pub segment_max_age_ms: u64,
    /// One sparse index entry per this many bytes of log. Default: 4096.
    pub index_interval_bytes: u32,
    /// Appends whose encoded batch is larger are rejected with
    /// [`StorageError::BatchTooLarge`](crate::StorageError). Default: 64 MiB.
    pub max_batch_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::Always,
            segment_max_bytes: 128 * 1024 * 1024,
            segment_max_age_ms: 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_batch_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Which old segments [`Log::apply_retention`](crate::Log::apply_retention) deletes.
/// `None` means "no limit of this kind".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    /// Delete segments whose newest record is older than this.
    pub max_age_ms: Option<u64>,
    /// Delete the oldest segments while the log is bigger than this.
    pub max_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_files_need_only_what_they_change() {
        let c: LogConfig = serde_json::from_str(r#"{ "fsync": { "interval": { "ms": 200 } } }"#).unwrap();
        assert_eq!(c, LogConfig { fsync: FsyncPolicy::Interval { ms: 200 }, ..LogConfig::default() });
        let c: LogConfig =
            serde_json::from_str(r#"{ "fsync": "never", "segment_max_bytes": 1024 }"#).unwrap();
        assert_eq!((c.fsync, c.segment_max_bytes, c.index_interval_bytes), (FsyncPolicy::Never, 1024, 4096));
        assert_eq!(serde_json::to_string(&FsyncPolicy::Always).unwrap(), r#""always""#);
        let r: Retention = serde_json::from_str(r#"{ "max_bytes": 10 }"#).unwrap();
        assert_eq!(r, Retention { max_age_ms: None, max_bytes: Some(10) });
    }
}
