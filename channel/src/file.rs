//! [`FileChannel`]: a channel over a file descriptor that is not a socket:
//! a regular file, a pipe, a character device (QEMU's `QIOChannelFile`).
//!
//! I/O is `readv(2)`/`writev(2)`; `EINTR` is retried and `EAGAIN` is
//! [`Error::WouldBlock`]. The channel is [`Features::SEEKABLE`] when
//! `lseek(fd, 0, SEEK_CUR)` works on the fd (regular files, block devices);
//! then [`Channel::seek`] is `lseek` and [`Channel::preadv`] /
//! [`Channel::pwritev`] do positioned I/O without moving the file position.
//! On a pipe they are [`Error::Unsupported`]. Blocking mode is `O_NONBLOCK`.
//! The watch polls the fd (regular files are always ready under `poll`).
//!
//! Limits: no fd passing, no `MSG_PEEK`, no shutdown (a thread blocked on a
//! pipe is woken by closing the other end). Errors name the channel and,
//! for channels opened by path, the path.
//!
//! # Example
//!
//! ```
//! use std::fs::OpenOptions;
//! use std::io::{IoSlice, IoSliceMut};
//! use std::os::unix::fs::OpenOptionsExt;
//! use transit_channel::{io, Channel, FileChannel};
//!
//! # let dir = std::env::temp_dir().join(format!("transit-doc-file-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("image.bin");
//! let mut opts = OpenOptions::new();
//! opts.read(true).write(true).create(true).truncate(true).mode(0o600);
//! let mut ch = FileChannel::open(&path, &opts)?;
//! io::write_all(&mut ch, b"0123456789")?;
//! // Positioned I/O leaves the file position at the end of the data.
//! ch.pwritev(&[IoSlice::new(b"AB")], 2)?;
//! let mut buf = [0u8; 4];
//! ch.preadv(&mut [IoSliceMut::new(&mut buf)], 1)?;
//! assert_eq!(&buf, b"1AB4");
//! assert_eq!(ch.seek(std::io::SeekFrom::Current(0))?, 10);
//! ch.close()?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::{self, IoSlice, IoSliceMut, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::channel::{
    check_read_request, check_write_request, Channel, Condition, Features, ReadFlags, Readiness,
    WatchFds, WatchSource, WriteFlags,
};
use crate::error::{Error, Result};

/// The most iovecs one system call takes (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// A channel over a file or pipe fd; see the [module documentation](self).
#[derive(Debug)]
pub struct FileChannel {
    name: String,
    path: Option<PathBuf>,
    fd: Option<OwnedFd>,
    features: Features,
    blocking: bool,
}

impl FileChannel {
    /// Open `path` with `options` (read/write/create/truncate/append, and
    /// through [`std::os::unix::fs::OpenOptionsExt`] the creation `mode` and
    /// custom flags such as `O_DIRECT` or `O_NONBLOCK`). The fd is
    /// close-on-exec. The channel is named `file:PATH`.
    #[doc(alias = "qio_channel_file_new_path")]
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<FileChannel> {
        let path = path.as_ref();
        let name = format!("file:{}", path.display());
        let file = options
            .open(path)
            .map_err(|e| Error::os(&name, format!("open {}", path.display()), e))?;
        let mut ch = FileChannel::new(OwnedFd::from(file), name)?;
        ch.path = Some(path.to_owned());
        Ok(ch)
    }

    /// Take ownership of `fd` (closed with the channel). The channel is
    /// named `fd:N`.
    #[doc(alias = "qio_channel_file_new_fd")]
    pub fn from_fd(fd: OwnedFd) -> Result<FileChannel> {
        let name = format!("fd:{}", fd.as_raw_fd());
        FileChannel::new(fd, name)
    }

    fn new(fd: OwnedFd, name: String) -> Result<FileChannel> {
        let raw = fd.as_raw_fd();
        // SAFETY: `raw` is an open fd owned by `fd`; F_GETFL reads flags only.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if fl < 0 {
            return Err(Error::last_os(&name, "fcntl(F_GETFL)"));
        }
        // SAFETY: `raw` is open; lseek with offset 0 and SEEK_CUR does not
        // move the position, it only reports it (or fails on a pipe).
        let seekable = unsafe { libc::lseek(raw, 0, libc::SEEK_CUR) } >= 0;
        Ok(FileChannel {
            name,
            path: None,
            fd: Some(fd),
            features: if seekable {
                Features::SEEKABLE
            } else {
                Features::empty()
            },
            blocking: fl & libc::O_NONBLOCK == 0,
        })
    }

    /// The path the channel was opened with, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The fd, while the channel is open.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    fn raw(&self) -> Result<libc::c_int> {
        self.fd
            .as_ref()
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| Error::closed(&self.name))
    }

    /// An OS error from errno naming `what` and the path.
    fn os_error(&self, what: &str, err: io::Error) -> Error {
        match &self.path {
            Some(p) => Error::os(&self.name, format_args!("{what} {}", p.display()), err),
            None => Error::os(&self.name, what, err),
        }
    }

    fn check_seekable(&self, feature: &'static str) -> Result<()> {
        if self.features.contains(Features::SEEKABLE) {
            Ok(())
        } else {
            Err(Error::unsupported(&self.name, feature))
        }
    }

    /// Run a system call returning `ssize_t`, retrying `EINTR`.
    fn retry(&self, what: &str, mut f: impl FnMut() -> isize) -> Result<usize> {
        loop {
            let n = f();
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(self.os_error(what, err));
            }
        }
    }
}

fn offset_arg(ch: &FileChannel, what: impl Display, offset: u64) -> Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| {
        Error::os(
            &ch.name,
            what,
            io::Error::new(io::ErrorKind::InvalidInput, "offset too large"),
        )
    })
}

impl Channel for FileChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn features(&self) -> Features {
        self.features
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        let fd = self.raw()?;
        check_read_request(self, fds.is_some(), flags)?;
        if bufs.is_empty() {
            return Ok(0);
        }
        let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
        let iov = bufs.as_mut_ptr().cast::<libc::iovec>();
        // SAFETY: IoSliceMut is ABI-compatible with `struct iovec` on Unix;
        // `iov` points to `cnt` valid, writable buffers borrowed for the call.
        self.retry("read from", || unsafe { libc::readv(fd, iov, cnt) })
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        let fd = self.raw()?;
        check_write_request(self, !fds.is_empty(), flags)?;
        if bufs.is_empty() {
            return Ok(0);
        }
        let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
        let iov = bufs.as_ptr().cast::<libc::iovec>();
        // SAFETY: IoSlice is ABI-compatible with `struct iovec` on Unix;
        // `iov` points to `cnt` valid buffers borrowed for the call.
        self.retry("write to", || unsafe { libc::writev(fd, iov, cnt) })
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        let fd = self.raw()?;
        // SAFETY: `fd` is open; F_GETFL reads flags only.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl < 0 {
            return Err(self.os_error("fcntl(F_GETFL) on", io::Error::last_os_error()));
        }
        let new = if blocking {
            fl & !libc::O_NONBLOCK
        } else {
            fl | libc::O_NONBLOCK
        };
        // SAFETY: `fd` is open; F_SETFL changes status flags only.
        if new != fl && unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(self.os_error("fcntl(F_SETFL) on", io::Error::last_os_error()));
        }
        self.blocking = blocking;
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        self.blocking
    }

    fn close(&mut self) -> Result<()> {
        let Some(fd) = self.fd.take() else {
            return Ok(());
        };
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` came from an OwnedFd we just gave up, so we own it
        // and close it exactly once.
        if unsafe { libc::close(raw) } < 0 {
            let err = io::Error::last_os_error();
            // On Linux the fd is released even when close reports EINTR.
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(self.os_error("close", err));
            }
        }
        Ok(())
    }

    fn watch_source(&self) -> WatchSource {
        match &self.fd {
            Some(fd) => WatchSource {
                fds: WatchFds::One(fd.as_raw_fd()),
                ready: Readiness::new(),
                name: self.name.clone(),
            },
            // A closed channel is "ready" with NVAL: a waiter wakes and the
            // next I/O reports Closed.
            None => WatchSource {
                fds: WatchFds::None,
                ready: Readiness::always(Condition::NVAL),
                name: self.name.clone(),
            },
        }
    }

    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        let fd = self.raw()?;
        self.check_seekable("seek")?;
        let (off, whence) = match pos {
            SeekFrom::Start(p) => (offset_arg(self, "seek", p)?, libc::SEEK_SET),
            SeekFrom::Current(d) => (d, libc::SEEK_CUR),
            SeekFrom::End(d) => (d, libc::SEEK_END),
        };
        // SAFETY: `fd` is open; lseek only changes the file position.
        let r = unsafe { libc::lseek(fd, off, whence) };
        if r < 0 {
            return Err(self.os_error("seek in", io::Error::last_os_error()));
        }
        Ok(r as u64)
    }

    fn preadv(&mut self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<usize> {
        let fd = self.raw()?;
        self.check_seekable("positioned read")?;
        let off = offset_arg(self, "positioned read", offset)?;
        if bufs.is_empty() {
            return Ok(0);
        }
        let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
        let iov = bufs.as_mut_ptr().cast::<libc::iovec>();
        // SAFETY: IoSliceMut is ABI-compatible with `struct iovec`; `iov`
        // points to `cnt` valid, writable buffers borrowed for the call.
        self.retry("positioned read from", || unsafe {
            libc::preadv(fd, iov, cnt, off)
        })
    }

    fn pwritev(&mut self, bufs: &[IoSlice<'_>], offset: u64) -> Result<usize> {
        let fd = self.raw()?;
        self.check_seekable("positioned write")?;
        let off = offset_arg(self, "positioned write", offset)?;
        if bufs.is_empty() {
            return Ok(0);
        }
        let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
        let iov = bufs.as_ptr().cast::<libc::iovec>();
        // SAFETY: IoSlice is ABI-compatible with `struct iovec`; `iov` points
        // to `cnt` valid buffers borrowed for the call.
        self.retry("positioned write to", || unsafe {
            libc::pwritev(fd, iov, cnt, off)
        })
    }
}
