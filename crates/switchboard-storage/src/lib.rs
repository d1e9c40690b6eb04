//! # switchboard-storage
//!
//! The segmented, append-only log under each Switchboard partition.
//!
//! - A [`Log`] is a directory of *segments* (`<base offset>.log`) holding checksummed record
//!   batches with dense `u64` offsets, plus sparse `.index` / `.timeindex` files to seek by
//!   offset and by time.
//! - [`Log::append`] writes one atomic batch; under [`FsyncPolicy::Always`] concurrent
//!   appends share fsyncs (group commit) and readers only ever see durable data.
//! - [`Log::open`] recovers after a crash: a torn or corrupt tail is cut off, indexes are
//!   rebuilt when missing or damaged, and no record whose checksum fails is ever returned.
//! - All file access goes through the [`Storage`] trait: [`FileStorage`] in production,
//!   [`MemStorage`] in tests, with injected I/O failures and simulated power loss.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use switchboard_core::ManualClock;
//! use switchboard_storage::{Log, LogConfig, MemStorage};
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let storage = MemStorage::new();
//! let log = Log::open(Arc::new(storage.clone()), "/data/orders-0", LogConfig::default(),
//!     Arc::new(ManualClock::default()))?;
//! let appended = log.append(&[Bytes::from("a"), Bytes::from("b")]).await?;
//! assert_eq!((appended.base_offset, appended.count), (0, 2));
//!
//! // A power cut loses nothing that was acknowledged under the default `Always` policy.
//! storage.power_cut();
//! drop(log);
//! let log = Log::open(Arc::new(storage), "/data/orders-0", LogConfig::default(),
//!     Arc::new(ManualClock::default()))?;
//! let records = log.read(1, 10, 1 << 20)?;
//! assert_eq!(records[0].payload, Bytes::from("b"));
//! # Ok::<(), switchboard_storage::StorageError>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The on-disk formats are described in the source of the `format` (batches) and `index`
//! modules; both carry a version number.

mod config;
mod error;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod log;
mod mem;
mod recovery;
mod segment;
mod storage;

pub use config::{FsyncPolicy, LogConfig, Retention};
pub use error::StorageError;
pub use log::{Appended, Durability, Log, Record, RetentionReport};
pub use mem::MemStorage;
pub use storage::{FileStorage, Storage, StorageFile};
