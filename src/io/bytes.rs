//! The bytes of a checkpoint file: memory-mapped read-only, so a model is never
//! copied into memory whole, or owned (tests and fuzzing parse buffers).

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result, Status};

/// Read-only bytes of one file.
pub struct FileBytes {
    inner: Inner,
}

enum Inner {
    Owned(Vec<u8>),
    /// `len > 0` bytes mapped at `ptr`, unmapped on drop.
    Mapped {
        ptr: *mut libc::c_void,
        len: usize,
    },
}

// SAFETY: the mapping is read-only and private; nothing mutates it while it lives,
// so sharing `&FileBytes` across threads is sharing immutable memory.
unsafe impl Send for FileBytes {}
unsafe impl Sync for FileBytes {}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({} bytes)", self.len())
    }
}

/// An I/O error naming the file; a file that does not exist is `NotFound`.
pub(crate) fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    let status = if e.kind() == std::io::ErrorKind::NotFound { Status::NotFound } else { Status::Io };
    Error::new(status, format!("{}: {what}: {e}", path.display()))
}

impl FileBytes {
    /// Bytes already in memory.
    pub fn owned(bytes: Vec<u8>) -> FileBytes {
        FileBytes { inner: Inner::Owned(bytes) }
    }

    /// Maps `path` read-only. The file must not be truncated while it is mapped
    /// (as with every memory-mapped reader, the process would get SIGBUS).
    pub fn map(path: &Path) -> Result<FileBytes> {
        let file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
        let meta = file.metadata().map_err(|e| io_error(path, "cannot stat", e))?;
        if !meta.is_file() {
            return Err(Error::io(format!("{}: not a regular file", path.display())));
        }
        let len =
            usize::try_from(meta.len()).map_err(|_| Error::io(format!("{}: file too large to map", path.display())))?;
        if len == 0 {
            // mmap refuses a zero length; an empty file is simply no bytes.
            return Ok(FileBytes::owned(Vec::new()));
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of an open file descriptor; the
        // kernel picks the address. The mapping outlives `file` by design.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io_error(path, "cannot map", std::io::Error::last_os_error()));
        }
        Ok(FileBytes { inner: Inner::Mapped { ptr, len } })
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Owned(v) => v,
            // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
            Inner::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr as *const u8, *len) },
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells the kernel the pages wholly inside `range` are no longer needed, so
    /// they leave this process's resident memory (they are re-read from the
    /// file if touched again). Loading a model layer by layer stays at the size
    /// of one layer instead of growing to the size of the model.
    pub fn release(&self, range: std::ops::Range<usize>) {
        let Inner::Mapped { ptr, len } = &self.inner else { return };
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => return,
        };
        let start = range.start.next_multiple_of(page);
        let end = (range.end.min(*len) / page) * page;
        if start < end {
            // SAFETY: [start, end) is page-aligned and inside our private read-only
            // mapping; MADV_DONTNEED on it only drops pages that are re-read on use.
            unsafe {
                libc::madvise((*ptr as *mut u8).add(start) as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
        }
    }
}

impl Drop for FileBytes {
    fn drop(&mut self) {
        if let Inner::Mapped { ptr, len } = self.inner {
            // SAFETY: unmapping the mapping created in `map`, once.
            unsafe { libc::munmap(ptr, len) };
        }
    }
}
