//! The positional-I/O abstraction every file access of the crate goes through, and its
//! real-file implementation.
//!
//! The log never touches `std::fs` directly: it is handed an `Arc<dyn Storage>`, so tests
//! can substitute [`MemStorage`](crate::MemStorage), which injects faults and simulates
//! power loss.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file system, as the log needs it.
///
/// Implementations must be usable from many threads at once.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates `path` and its missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// The entries of directory `path`, as full paths, in any order.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] if the directory does not exist.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;

    /// Opens `path` for reading and writing, creating it (empty) if `create` is set and it
    /// does not exist.
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;

    /// Makes the directory's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Reads a whole file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open_file(path, false)?;
        let len = usize::try_from(file.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read whole"))?;
        let mut buf = vec![0u8; len];
        let n = read_full_at(file.as_ref(), &mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Replaces `path` with `data` atomically: writes a temporary file next to it, makes it
    /// durable, renames it over `path` and makes the directory durable.
    fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = self.open_file(&tmp, true)?;
        file.set_len(0)?;
        file.write_at(data, 0)?;
        file.sync_data()?;
        drop(file);
        self.rename(&tmp, path)?;
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => self.sync_dir(dir),
            _ => Ok(()),
        }
    }
}

/// An open file with positional reads and writes.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `data` at `offset`, or fails.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;

    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// Reads until `buf` is full or the end of the file; returns how many bytes were read.
pub(crate) fn read_full_at(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// [`Storage`] on the real file system (`pread`/`pwrite`/`fdatasync`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStorage;

impl FileStorage {
    /// The real file system.
    pub fn new() -> FileStorage {
        FileStorage
    }
}

impl Storage for FileStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(path)?.map(|entry| entry.map(|e| e.path())).collect()
    }

    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Arc::new(RealFile { file }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

#[derive(Debug)]
struct RealFile {
    file: File,
}

impl StorageFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.file, buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
