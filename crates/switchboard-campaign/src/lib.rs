//! # switchboard-campaign
//!
//! Reliability campaigns against the real `switchboard serve` binary: real processes, real
//! SIGKILLs, a real full disk. Each campaign returns a report that lists the guarantees it
//! saw violated; the `switchboard-campaign` binary prints it and exits non-zero when that
//! list is not empty.
//!
//! - [`crash`]: a writer process and a reader process work against the server while it is
//!   SIGKILLed and restarted; the checker proves that no acknowledged publish was lost, that
//!   no message came back after its ack was confirmed, and that promised orders held.
//! - [`disk_full`]: the data directory on a small tmpfs; publishes fail with a clear
//!   error, the server stays up, everything acknowledged stays readable, and publishing
//!   works again once space is freed.
//! - [`slow_consumer`]: a consumer that never acks while the backlog grows; the server's
//!   resident memory must stay flat.
//! - [`load`]: many topics and many concurrent clients; throughput, errors, memory and
//!   file descriptors.
//!
//! The server runs on fixed loopback ports ([`ServerSpec`]) so that clients reconnect to
//! the same address after a restart. Errors are `anyhow`: they are failures of the harness
//! itself (a binary that does not start, a mount that fails), reported to a person and
//! never matched on; what the campaign found about the broker is in the reports.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use switchboard_campaign::{CrashConfig, Launcher, Report};
//!
//! let config = CrashConfig::new("target/debug/switchboard".into(), Launcher::current_exe()?)
//!     .kills(3)
//!     .per_kill(Duration::from_secs(5));
//! let report = switchboard_campaign::crash::run(config).await?;
//! assert!(report.violations().is_empty(), "{report}");
//! # Ok(())
//! # }
//! ```

pub mod crash;
pub mod disk_full;
mod grpc;
pub mod load;
mod procfs;
mod report;
mod server;
pub mod slow_consumer;

pub use crash::{CrashConfig, CrashReport, Launcher, Role, WorkerSpec};
pub use disk_full::{DiskFullConfig, DiskFullReport};
pub use load::{LoadConfig, LoadReport};
pub use report::Report;
pub use server::{ServerProcess, ServerSpec, default_server_bin};
pub use slow_consumer::{SlowConsumerConfig, SlowConsumerReport};
