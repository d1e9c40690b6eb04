//! An in-memory [`Storage`] with fault injection and simulated power loss, for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{Storage, StorageFile};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// In-memory files whose content survives only what [`StorageFile::sync_data`] made durable
/// when [`power_cut`](MemStorage::power_cut) is called.
///
/// Clones share the same files. Directory operations (create, rename, remove) are durable
/// immediately; file *content* is durable only up to the last successful `sync_data` of that
/// file.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, Arc<MemFile>>,
    dirs: BTreeSet<PathBuf>,
    capacity: Option<u64>,
    fail_next_write: bool,
    tear_next_write: Option<usize>,
    fail_next_sync: bool,
    sync_delay: std::time::Duration,
    sync_count: u64,
}

impl State {
    fn total_bytes(&self) -> u64 {
        self.files.values().map(|f| f.data.lock().live.len() as u64).sum()
    }

    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            None => true,
            Some(p) if p.as_os_str().is_empty() => true,
            Some(p) => self.dirs.contains(p),
        }
    }
}

#[derive(Debug, Default)]
struct MemFile {
    data: Mutex<FileData>,
}

#[derive(Debug, Default)]
struct FileData {
    live: Vec<u8>,
    durable: Vec<u8>,
}

impl MemStorage {
    /// An empty file system with unlimited capacity and no faults armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits the total bytes over all files; a write that would exceed it fails with
    /// `ENOSPC` and writes nothing. `None` removes the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.shared.state.lock().capacity = bytes;
    }

    /// The next `write_at` (on any file) fails with `EIO` and writes nothing.
    pub fn fail_next_write(&self) {
        self.shared.state.lock().fail_next_write = true;
    }

    /// The next `write_at` (on any file) persists only its first `keep` bytes, then fails
    /// with `EIO`.
    pub fn tear_next_write(&self, keep: usize) {
        self.shared.state.lock().tear_next_write = Some(keep);
    }

    /// The next `sync_data` (on any file) fails with `EIO` and makes nothing durable.
    pub fn fail_next_sync(&self) {
        self.shared.state.lock().fail_next_sync = true;
    }

    /// Makes every `sync_data` take `delay` (a slow disk), so tests can act while an fsync is
    /// in progress, e.g. drop a caller that waits for one.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.shared.state.lock().sync_delay = delay;
    }

    /// Simulated power loss: every file reverts to what its last successful `sync_data` made
    /// durable (files never synced become empty). Handles opened before stay usable but
    /// whoever held them should be dropped, as after a real crash.
    pub fn power_cut(&self) {
        let state = self.shared.state.lock();
        for file in state.files.values() {
            let mut data = file.data.lock();
            let durable = data.durable.clone();
            data.live = durable;
        }
    }

    /// A new, independent storage holding what a power cut at this instant would leave
    /// (every file's durable content), while this one keeps running. Lets a test "crash"
    /// a live system at an arbitrary point and recover the image elsewhere. Faults and the
    /// capacity limit are not copied.
    pub fn crash_image(&self) -> MemStorage {
        let state = self.shared.state.lock();
        let files = state
            .files
            .iter()
            .map(|(path, file)| {
                let durable = file.data.lock().durable.clone();
                let copy = MemFile { data: Mutex::new(FileData { live: durable.clone(), durable }) };
                (path.clone(), Arc::new(copy))
            })
            .collect();
        let copy = State { files, dirs: state.dirs.clone(), ..State::default() };
        MemStorage { shared: Arc::new(Shared { state: Mutex::new(copy) }) }
    }

    /// Flips all bits of the byte at `offset` of `path`, in both live and durable content.
    /// Does nothing if the file is missing or shorter.
    pub fn corrupt(&self, path: &Path, offset: u64) {
        let state = self.shared.state.lock();
        if let Some(file) = state.files.get(path) {
            let mut data = file.data.lock();
            let Ok(i) = usize::try_from(offset) else { return };
            if let Some(b) = data.live.get_mut(i) {
                *b ^= 0xFF;
            }
            if let Some(b) = data.durable.get_mut(i) {
                *b ^= 0xFF;
            }
        }
    }

    /// Cuts `path` to at most `len` bytes (live and durable), as a torn tail after a crash.
    pub fn truncate_raw(&self, path: &Path, len: u64) {
        let state = self.shared.state.lock();
        if let Some(file) = state.files.get(path) {
            let mut data = file.data.lock();
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            data.live.truncate(len);
            data.durable.truncate(len);
        }
    }

    /// The live length of `path`, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let state = self.shared.state.lock();
        state.files.get(path).map(|f| f.data.lock().live.len() as u64)
    }

    /// Live bytes over all files.
    pub fn total_bytes(&self) -> u64 {
        self.shared.state.lock().total_bytes()
    }

    /// All file paths, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.shared.state.lock().files.keys().cloned().collect()
    }

    /// How many times `sync_data` was called (successful or not) on any file.
    pub fn sync_count(&self) -> u64 {
        self.shared.state.lock().sync_count
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
}

impl Storage for MemStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        if state.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a file exists at that path"));
        }
        for p in path.ancestors() {
            if !p.as_os_str().is_empty() {
                state.dirs.insert(p.to_path_buf());
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.shared.state.lock();
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        let files = state.files.keys().filter(|p| p.parent() == Some(path));
        let dirs = state.dirs.iter().filter(|p| p.parent() == Some(path));
        Ok(files.chain(dirs).cloned().collect())
    }

    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.shared.state.lock();
        if let Some(file) = state.files.get(path) {
            return Ok(Arc::new(MemHandle { shared: self.shared.clone(), file: file.clone() }));
        }
        if !create {
            return Err(not_found(path));
        }
        if !state.parent_exists(path) {
            return Err(not_found(path.parent().unwrap_or(path)));
        }
        if state.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "a directory exists at that path"));
        }
        let file = Arc::new(MemFile::default());
        state.files.insert(path.to_path_buf(), file.clone());
        Ok(Arc::new(MemHandle { shared: self.shared.clone(), file }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        state.files.retain(|p, _| !p.starts_with(path));
        state.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        if !state.parent_exists(to) {
            return Err(not_found(to));
        }
        let file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.shared.state.lock();
        state.files.contains_key(path) || state.dirs.contains(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let state = self.shared.state.lock();
        if state.dirs.contains(path) { Ok(()) } else { Err(not_found(path)) }
    }
}

/// An open in-memory file. It keeps the content alive after the file is removed, as an
/// open file descriptor does.
#[derive(Debug)]
struct MemHandle {
    shared: Arc<Shared>,
    file: Arc<MemFile>,
}

fn to_usize(v: u64) -> io::Result<usize> {
    usize::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

impl StorageFile for MemHandle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.file.data.lock();
        let start = to_usize(offset)?;
        if start >= data.live.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.live.len() - start);
        buf[..n].copy_from_slice(&data.live[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        let start = to_usize(offset)?;
        let mut keep = data.len();
        let mut fail = false;
        if std::mem::take(&mut state.fail_next_write) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        if let Some(k) = state.tear_next_write.take() {
            keep = k.min(data.len());
            fail = true;
        }
        if let Some(cap) = state.capacity {
            let total = state.total_bytes();
            let cur = self.file.data.lock().live.len() as u64;
            let new_len = cur.max((start + keep) as u64);
            if total.saturating_sub(cur) + new_len > cap {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
        }
        let mut file = self.file.data.lock();
        if file.live.len() < start + keep {
            file.live.resize(start + keep, 0);
        }
        file.live[start..start + keep].copy_from_slice(&data[..keep]);
        if fail { Err(io::Error::from_raw_os_error(EIO)) } else { Ok(()) }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.data.lock().live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let state = self.shared.state.lock();
        let len = to_usize(len)?;
        let cur = self.file.data.lock().live.len();
        if len > cur
            && let Some(cap) = state.capacity
            && state.total_bytes() + (len - cur) as u64 > cap
        {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        self.file.data.lock().live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.sync_count += 1;
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let delay = state.sync_delay;
        drop(state);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut data = self.file.data.lock();
        let live = data.live.clone();
        data.durable = live;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn power_cut_keeps_only_synced_content() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("/d")).unwrap();
        let f = s.open_file(Path::new("/d/a"), true).unwrap();
        f.write_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        f.write_at(b" world", 5).unwrap();
        let g = s.open_file(Path::new("/d/b"), true).unwrap();
        g.write_at(b"never synced", 0).unwrap();
        s.power_cut();
        assert_eq!(s.read_file(Path::new("/d/a")).unwrap(), b"hello");
        assert_eq!(s.file_len(Path::new("/d/b")), Some(0));
    }

    #[test]
    fn faults_fire_once() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("/d")).unwrap();
        let f = s.open_file(Path::new("/d/a"), true).unwrap();
        s.fail_next_write();
        assert!(f.write_at(b"x", 0).is_err());
        assert_eq!(f.len().unwrap(), 0);
        f.write_at(b"x", 0).unwrap();
        s.tear_next_write(2);
        assert!(f.write_at(b"abcd", 1).is_err());
        assert_eq!(s.read_file(Path::new("/d/a")).unwrap(), b"xab");
        s.set_capacity(Some(4));
        let e = f.write_at(b"zz", 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(f.len().unwrap(), 3);
        s.fail_next_sync();
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        assert_eq!(s.sync_count(), 2);
    }

    #[test]
    fn list_dir_and_rename() {
        let s = MemStorage::new();
        assert_eq!(s.list_dir(Path::new("/d")).unwrap_err().kind(), io::ErrorKind::NotFound);
        s.create_dir_all(Path::new("/d/e")).unwrap();
        s.write_file_atomic(Path::new("/d/f"), b"abc").unwrap();
        let mut entries = s.list_dir(Path::new("/d")).unwrap();
        entries.sort();
        assert_eq!(entries, vec![PathBuf::from("/d/e"), PathBuf::from("/d/f")]);
        s.power_cut();
        assert_eq!(s.read_file(Path::new("/d/f")).unwrap(), b"abc");
        s.remove_dir_all(Path::new("/d")).unwrap();
        assert!(!s.exists(Path::new("/d/f")));
    }
}
