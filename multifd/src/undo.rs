//! Crash-safe in-place updates: the undo journal behind
//! [`RecvConfig::inplace`](crate::RecvConfig::inplace) (`recv --delta
//! --inplace`).
//!
//! A delta receiver normally builds its output next to the file it
//! replaces and renames it into place, which costs a copy of the whole
//! older file on file systems that cannot share blocks (ext4, tmpfs). In
//! place, the receiver writes the differing pages straight into the file,
//! and keeps what it overwrote in a [`Journal`] next to it
//! (`.NAME.transit-undo`, [`journal_path_for`]), so a failure of any kind
//! can put the file back as it was:
//!
//! * Before any range of the file is overwritten, zeroed or cut off by a
//!   shorter size, its present contents are appended to the journal as
//!   records (offset, length, data; a range that reads as zeros is
//!   recorded without data) and the journal is made durable
//!   (`fdatasync`); only then is the file written. Each call saves a
//!   whole batch (the receiver calls it once per packet, with every run
//!   of the packet), so the cost is one append and one sync per packet,
//!   not per page. A range already saved is not saved again (its first
//!   contents are the ones to restore); a zeroing over what reads as
//!   zeros records nothing, and the holes of a large range are found with
//!   `SEEK_DATA` instead of being read.
//! * The journal's header holds the file's size before the update and
//!   its inode number; a size change is undone with the rest.
//! * Success ([`Journal::commit`]): `fsync` the file, remove the journal,
//!   `fsync` the directory. The update is final once the journal's
//!   removal is durable, and the receiver tells the sender of success
//!   only after that.
//! * Failure ([`Journal::rollback`]): restore the old size, apply the
//!   records in reverse order, `fsync` the file, remove the journal: the
//!   file is byte for byte what it was.
//! * A crash ([`recover`]): the journal stays, and the next receive on
//!   that path rolls the file back before anything else.
//!
//! Records carry a magic number, their length and a CRC-64 of head and
//! data. A record torn by a crash in the middle of an append is where
//! reading stops: it and anything after it are ignored, which is right
//! because the write it protected never started (the sync comes first),
//! and any later record would have synced it. A journal is created under
//! a temporary name, its header made durable and locked (`flock`), and
//! only then linked to its name: a journal found under its name is whole
//! and its lock says whether a live receiver holds it. Recovery refuses,
//! with an [`UndoError`] and without touching the file, a journal that is
//! locked by a live receiver, one whose header is not a transit journal,
//! and one written for another file (the path now names another inode).
//!
//! Limits: readers of the file during the update see a mix of old and new
//! pages (a receiver that ends, well or not, never leaves it mixed; one
//! that is killed leaves it mixed until the next receive on the path
//! recovers it); other writers must keep away while it
//! runs (their writes are not journaled). The journal needs room for the
//! old contents of every changed range (about the delta's size, plus a
//! shortened file's cut tail). Hard links to the file see the update,
//! as with any in-place writer. On file systems without hard links
//! (FAT), the journal is created under its own name, and a crash within
//! its creation leaves one that recovery refuses as damaged (nothing was
//! written to the file yet: remove it). Appending and syncing happen
//! outside the receiving threads' lock, so channels save concurrently; a
//! failed append or sync poisons the journal (every later save fails, so
//! the session fails and rolls back from the records before it).
//!
//! # Example
//!
//! ```
//! use std::os::unix::fs::FileExt;
//! use transit_multifd::undo::{self, Change, Journal};
//!
//! let dir = std::env::temp_dir().join(format!("transit-undo-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("disk.img");
//! std::fs::write(&path, vec![7u8; 16384])?;
//! let journal = Journal::create(&path, 4096)?;
//! journal.save(&[(4096, 4096)], Change::Write)?; // durable before the write
//! journal.file().write_all_at(&[1u8; 4096], 4096)?;
//! drop(journal); // a crash: the journal stays
//! let back = undo::recover(&path)?.expect("a journal was there");
//! assert_eq!(back.ranges, 1);
//! assert_eq!(std::fs::read(&path)?, vec![7u8; 16384]);
//! assert!(!undo::journal_path_for(&path)?.exists());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::image::{seek_data, zero_file_range};
use crate::output::parent_dir;
use crate::session::lock;

/// Magic of a journal's header.
const MAGIC: &[u8; 12] = b"transit-undo";
/// Version of the journal format.
const VERSION: u32 = 1;
/// Header: magic, version, old size, inode, CRC-64 of the 32 bytes before.
const HEADER_LEN: usize = 40;
/// Magic of a record's head.
const RECORD_MAGIC: u32 = 0x7564_6f31; // "udo1"
/// Record head: magic, kind, offset, length, CRC-64 of head[..24] and data.
const RECORD_HEAD_LEN: usize = 32;
/// A record with the range's bytes.
const KIND_DATA: u32 = 1;
/// A range that read as zeros: no bytes.
const KIND_ZERO: u32 = 2;
/// Bytes of data in one record at most (reads and writes stay bounded).
const MAX_DATA: u64 = 1 << 20;
/// Encoded records written out at once at most.
const APPEND_AT: usize = 8 << 20;
/// Ranges from this long on are looked at for holes before being read.
const SEEK_FROM: u64 = 1 << 20;

/// Why an in-place update could not begin, or a journal could not be
/// applied. Recovery refuses rather than guess: the file is left as it
/// is, and so is the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UndoError {
    /// A live receiver holds the journal: it is updating the file now.
    #[error("{target} is being updated in place by another receiver (its undo journal {journal} is locked)")]
    Busy {
        /// The file.
        target: PathBuf,
        /// Its journal.
        journal: PathBuf,
    },
    /// The file at the journal's path is not a transit undo journal, or
    /// its header is damaged.
    #[error("{journal} is not a transit undo journal, or its header is damaged: {target} was left as it is; remove {journal} once {target} is known to be right")]
    NotAJournal {
        /// The file.
        target: PathBuf,
        /// Its journal.
        journal: PathBuf,
    },
    /// The journal was written for another file than the one now at the
    /// path (its inode differs: the file was replaced since).
    #[error("{journal} belongs to an earlier file at {target} (inode {expected}, now {found}): nothing was rolled back; remove {journal} once {target} is known to be right")]
    OtherFile {
        /// The file.
        target: PathBuf,
        /// Its journal.
        journal: PathBuf,
        /// The inode the journal was written for.
        expected: u64,
        /// The inode at the path now.
        found: u64,
    },
    /// The journal's file is gone.
    #[error("{journal} is the undo journal of an interrupted in-place update of {target}, which no longer exists: nothing to roll back; remove {journal}")]
    TargetGone {
        /// The file.
        target: PathBuf,
        /// Its journal.
        journal: PathBuf,
    },
    /// An operation on the file or the journal failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done, naming the path.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> UndoError {
    let op = op.into();
    move |source| UndoError::Io { op, source }
}

/// What a rollback restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The journal applied (and removed).
    pub journal: PathBuf,
    /// Records applied (ranges put back).
    pub ranges: u64,
    /// Bytes put back (ranges that were zeros included).
    pub bytes: u64,
    /// The file's size, restored.
    pub old_size: u64,
    /// The journal ended in a torn or damaged record, ignored.
    pub torn: bool,
}

/// What the caller is about to do to a range ([`Journal::save`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Write data: every byte's old value is needed.
    Write,
    /// Make it read as zeros: bytes that are zero already need nothing.
    Zero,
}

/// Where the undo journal of `target` lives: `.NAME.transit-undo` next to
/// it.
pub fn journal_path_for(target: &Path) -> io::Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", target.display()),
        )
    })?;
    let mut p = OsString::from(".");
    p.push(name);
    p.push(".transit-undo");
    Ok(target.with_file_name(p))
}

fn journal_path(target: &Path) -> Result<PathBuf, UndoError> {
    journal_path_for(target).map_err(io_err(format!(
        "name the undo journal of {}",
        target.display()
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Committed,
    RolledBack,
}

/// The undo journal of one in-place update (see the [module
/// documentation](self)). It holds the file open for reading and writing
/// ([`file`](Self::file)) and its journal locked.
///
/// Dropping it without [`commit`](Self::commit) or
/// [`rollback`](Self::rollback) leaves the journal, as a crash would: the
/// next [`recover`] rolls the file back.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    target_path: PathBuf,
    /// The journal.
    log: File,
    /// The file being updated.
    target: File,
    old_size: u64,
    /// The unit of "already saved" ([`Journal::save`]).
    block: u64,
    /// Saves cover `[0, limit)`: the old size, or less once the file was
    /// cut (the cut tail was saved whole).
    limit: AtomicU64,
    /// Blocks whose old contents are in the journal.
    saved: Box<[AtomicU64]>,
    /// The append position.
    end: Mutex<u64>,
    /// An append or a sync failed: nothing more may be saved.
    poisoned: AtomicBool,
    state: Mutex<State>,
}

impl Journal {
    /// Begin an in-place update of the regular file `target`: create its
    /// journal ([`journal_path_for`]) with the file's mode and (where
    /// allowed) owner, holding the file's size and inode, durable and
    /// locked before it appears under its name. `block` is the unit in
    /// which saved ranges are remembered (the receiver's page size).
    ///
    /// Fails with [`UndoError::Busy`] if a journal exists already (call
    /// [`recover`] first).
    pub fn create(target: &Path, block: u32) -> Result<Journal, UndoError> {
        let path = journal_path(target)?;
        let shown = target.display();
        let tfile = OpenOptions::new()
            .read(true)
            .write(true)
            .open(target)
            .map_err(io_err(format!("open {shown} to update it in place")))?;
        let meta = tfile
            .metadata()
            .map_err(io_err(format!("look at {shown}")))?;
        if !meta.is_file() {
            return Err(UndoError::Io {
                op: format!("update {shown} in place"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let mut header = [0u8; HEADER_LEN];
        header[..12].copy_from_slice(MAGIC);
        header[12..16].copy_from_slice(&VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&meta.len().to_le_bytes());
        header[24..32].copy_from_slice(&meta.ino().to_le_bytes());
        let crc = crc64(&[&header[..32]]);
        header[32..40].copy_from_slice(&crc.to_le_bytes());
        let made = io_err(format!("create the undo journal {}", path.display()));
        let busy = || UndoError::Busy {
            target: target.to_path_buf(),
            journal: path.clone(),
        };
        let mut nonce = [0u8; 8];
        crate::random_bytes(&mut nonce);
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(
            "-{}-{:016x}.tmp",
            std::process::id(),
            u64::from_ne_bytes(nonce)
        ));
        let tmp = path.with_file_name(tmp_name);
        let file = new_journal_file(&tmp, &meta, &header).map_err(made)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        let file = match linked {
            Ok(()) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(busy()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
                ) =>
            {
                // No hard links here (FAT): create it under its name.
                drop(file);
                match new_journal_file(&path, &meta, &header) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(busy()),
                    Err(e) => return Err(io_err(format!("create {}", path.display()))(e)),
                }
            }
            Err(e) => return Err(io_err(format!("create {}", path.display()))(e)),
        };
        sync_dir(&path);
        let block = u64::from(block.max(1));
        let blocks = meta.len().div_ceil(block).div_ceil(64) as usize;
        Ok(Journal {
            path,
            target_path: target.to_path_buf(),
            log: file,
            target: tfile,
            old_size: meta.len(),
            block,
            limit: AtomicU64::new(meta.len()),
            saved: (0..blocks).map(|_| AtomicU64::new(0)).collect(),
            end: Mutex::new(HEADER_LEN as u64),
            poisoned: AtomicBool::new(false),
            state: Mutex::new(State::Open),
        })
    }

    /// The file being updated, open for reading and writing.
    pub fn file(&self) -> &File {
        &self.target
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's path.
    pub fn target(&self) -> &Path {
        &self.target_path
    }

    /// The file's size before the update.
    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    /// Save the present contents of `ranges` (byte offset, length) that
    /// `change` is about to alter: those below the old size and not saved
    /// before, in whole blocks. When this returns, the records are
    /// durable and the caller may alter the ranges. Safe to call from
    /// several threads for disjoint ranges.
    pub fn save(&self, ranges: &[(u64, u64)], change: Change) -> io::Result<()> {
        let limit = self.limit.load(Relaxed);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &(off, len) in ranges {
            let end = off.saturating_add(len).min(limit);
            if off >= end {
                continue;
            }
            for i in off / self.block..end.div_ceil(self.block) {
                if self.is_saved(i) {
                    continue;
                }
                match runs.last_mut() {
                    Some((_, b)) if *b == i => *b += 1,
                    _ => runs.push((i, i + 1)),
                }
            }
        }
        if runs.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        let mut wrote = false;
        for &(a, b) in &runs {
            let (start, stop) = (a * self.block, (b * self.block).min(limit));
            self.encode(start, stop, change, &mut out, &mut wrote)?;
        }
        if !out.is_empty() {
            self.append(&out)?;
            wrote = true;
        }
        if wrote {
            self.sync()?;
        }
        // A zeroing recorded only the non-zero bytes: those blocks are
        // saved again if data is written there later (reverse order at
        // rollback puts the first contents back last).
        if change == Change::Write {
            for &(a, b) in &runs {
                for i in a..b {
                    self.saved[(i / 64) as usize].fetch_or(1 << (i % 64), Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Change the file's size to `size`, first saving what a cut takes
    /// away.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        let now = self.target.metadata()?.len();
        let stop = now.min(self.limit.load(Relaxed));
        if size < stop {
            // Rollback restores the old size first: the tail reads as
            // zeros, so only its data needs saving.
            let mut out = Vec::new();
            let mut wrote = false;
            self.encode(size, stop, Change::Zero, &mut out, &mut wrote)?;
            if !out.is_empty() {
                self.append(&out)?;
                wrote = true;
            }
            if wrote {
                self.sync()?;
            }
            self.limit.fetch_min(size, Relaxed);
        }
        self.target.set_len(size)
    }

    /// The update is complete: make the file durable (`fsync`), remove
    /// the journal and make that durable (`fsync` of the directory). From
    /// here nothing rolls it back. Calling it again does nothing.
    pub fn commit(&self) -> Result<(), UndoError> {
        let mut st = lock(&self.state);
        match *st {
            State::Committed => return Ok(()),
            State::RolledBack => {
                return Err(UndoError::Io {
                    op: format!(
                        "commit the in-place update of {}",
                        self.target_path.display()
                    ),
                    source: io::Error::other("it was rolled back"),
                })
            }
            State::Open => {}
        }
        if self.poisoned.load(Relaxed) {
            return Err(UndoError::Io {
                op: format!(
                    "commit the in-place update of {}",
                    self.target_path.display()
                ),
                source: io::Error::other("a write to its undo journal failed"),
            });
        }
        self.target.sync_all().map_err(io_err(format!(
            "make {} durable",
            self.target_path.display()
        )))?;
        fs::remove_file(&self.path).map_err(io_err(format!("remove {}", self.path.display())))?;
        *st = State::Committed;
        sync_dir(&self.path);
        Ok(())
    }

    /// Undo the update: restore the old size, put every saved range back
    /// (in reverse order), `fsync` the file, remove the journal. `None` if
    /// it was committed or rolled back already. On failure the journal
    /// stays (the next [`recover`] tries again).
    pub fn rollback(&self) -> Result<Option<Recovered>, UndoError> {
        let mut st = lock(&self.state);
        if *st != State::Open {
            return Ok(None);
        }
        let r = apply(
            &self.log,
            &self.target,
            self.old_size,
            &self.path,
            &self.target_path,
        )?;
        *st = State::RolledBack;
        Ok(Some(r))
    }

    /// True while neither committed nor rolled back.
    pub fn is_open(&self) -> bool {
        *lock(&self.state) == State::Open
    }

    fn is_saved(&self, i: u64) -> bool {
        self.saved[(i / 64) as usize].load(Relaxed) & (1 << (i % 64)) != 0
    }

    /// Append the records that save `[start, stop)` of the file for
    /// `change` to `out` (written out to the journal whenever it grows
    /// large; `wrote` then set).
    fn encode(
        &self,
        start: u64,
        stop: u64,
        change: Change,
        out: &mut Vec<u8>,
        wrote: &mut bool,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut pos = start;
        while pos < stop {
            // Holes of a large range are skipped, not read. Only SEEK_DATA,
            // and only there: it answers at once inside data, where
            // SEEK_HOLE may walk the file to the end of its data (tmpfs
            // walks page by page: 5 ms a call in a dense 1 GiB file).
            if stop - pos >= SEEK_FROM {
                let data = seek_data(&self.target, pos)?.unwrap_or(stop).min(stop);
                if data > pos {
                    // A hole reads as zeros.
                    if change == Change::Write {
                        push_record(out, KIND_ZERO, pos, data - pos, &[]);
                    }
                    pos = data;
                    continue;
                }
            }
            let l = (stop - pos).min(MAX_DATA) as usize;
            buf.resize(l, 0);
            self.target.read_exact_at(&mut buf[..l], pos)?;
            self.encode_read(pos, &buf[..l], change, out);
            pos += l as u64;
            if out.len() >= APPEND_AT {
                self.append(out)?;
                out.clear();
                *wrote = true;
            }
        }
        Ok(())
    }

    /// Records for `data` read at `off`: block by block, zero blocks as
    /// zero records (or nothing when zeroing), the others with their
    /// bytes; neighbours of one kind merged.
    fn encode_read(&self, off: u64, data: &[u8], change: Change, out: &mut Vec<u8>) {
        let block = self.block as usize;
        let mut run: Option<(bool, usize, usize)> = None; // (zero, from, to)
        let emit = |r: (bool, usize, usize), out: &mut Vec<u8>| {
            let (zero, a, b) = r;
            if zero {
                if change == Change::Write {
                    push_record(out, KIND_ZERO, off + a as u64, (b - a) as u64, &[]);
                }
            } else {
                push_record(out, KIND_DATA, off + a as u64, (b - a) as u64, &data[a..b]);
            }
        };
        for (i, piece) in data.chunks(block).enumerate() {
            let zero = crate::zero::is_zero(piece);
            let (a, b) = (i * block, i * block + piece.len());
            run = match run {
                Some((z, from, _)) if z == zero => Some((z, from, b)),
                Some(r) => {
                    emit(r, out);
                    Some((zero, a, b))
                }
                None => Some((zero, a, b)),
            };
        }
        if let Some(r) = run {
            emit(r, out);
        }
    }

    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let mut end = lock(&self.end);
        if self.poisoned.load(Relaxed) {
            return Err(io::Error::other(
                "an earlier write to the undo journal failed",
            ));
        }
        match self.log.write_all_at(buf, *end) {
            Ok(()) => {
                *end += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // What was written in part ends the journal for readers.
                self.poisoned.store(true, Relaxed);
                Err(e)
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.log.sync_data().inspect_err(|_| {
            self.poisoned.store(true, Relaxed);
        })
    }
}

/// Create a journal file at `path` (exclusively), owned and moded as the
/// file of `meta`, its header written, durable and locked.
fn new_journal_file(path: &Path, meta: &fs::Metadata, header: &[u8]) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let made = (|| {
        let fd = file.as_raw_fd();
        // The journal holds the file's old contents: its owner (where we
        // may) and its mode, no more.
        // SAFETY: fchown on our own open descriptor.
        unsafe { libc::fchown(fd, meta.uid(), meta.gid()) };
        // SAFETY: fchmod on our own open descriptor.
        if unsafe { libc::fchmod(fd, (meta.mode() & 0o777) as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        file.write_all_at(header, 0)?;
        file.sync_all()?;
        // SAFETY: flock on our own open descriptor.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Best effort: some file systems refuse `fsync` on directories.
fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
}

fn crc64(parts: &[&[u8]]) -> u64 {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

fn push_record(out: &mut Vec<u8>, kind: u32, offset: u64, len: u64, data: &[u8]) {
    let mut head = [0u8; RECORD_HEAD_LEN];
    head[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    head[4..8].copy_from_slice(&kind.to_le_bytes());
    head[8..16].copy_from_slice(&offset.to_le_bytes());
    head[16..24].copy_from_slice(&len.to_le_bytes());
    let crc = crc64(&[&head[..24], data]);
    head[24..32].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
}

/// A journal's header: (old size, inode), or `None` if it is not one.
fn read_header(file: &File) -> io::Result<Option<(u64, u64)>> {
    let mut h = [0u8; HEADER_LEN];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().unwrap_or([0; 8]));
    if &h[..12] != MAGIC || h[12..16] != VERSION.to_le_bytes() || crc64(&[&h[..32]]) != word(32..40)
    {
        return Ok(None);
    }
    Ok(Some((word(16..24), word(24..32))))
}

/// One record found in a journal.
struct Record {
    zero: bool,
    offset: u64,
    len: u64,
    /// Where its data starts in the journal.
    at: u64,
}

/// How a journal ends after its last valid record.
///
/// Bytes after it that are no whole valid record are the last batch of
/// appends a crash cut short (its ranges were never written: the sync
/// comes first). Within that unsynced batch, later records may have
/// reached the disk while earlier ones did not, and a torn record's data
/// (the file's old contents) may itself hold record-shaped bytes: so a
/// valid-looking record after a bad one proves nothing, and the journal
/// is read up to its first bad record. (Damage to synced records, bit rot,
/// cannot be told from that; it would roll back only the records before
/// it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Right after it.
    Clean,
    /// In bytes that are no whole valid record.
    Torn,
}

/// The record at `at`, if a whole valid one starts there, and where the
/// next one starts.
fn record_at(
    file: &File,
    at: u64,
    size: u64,
    old_size: u64,
    data: &mut Vec<u8>,
) -> io::Result<Option<(Record, u64)>> {
    let mut head = [0u8; RECORD_HEAD_LEN];
    if size.saturating_sub(at) < RECORD_HEAD_LEN as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut head, at)?;
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(head[r].try_into().unwrap_or([0; 8]));
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let kind = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let (offset, len, crc) = (word(8..16), word(16..24), word(24..32));
    let body = match kind {
        KIND_DATA => len,
        _ => 0,
    };
    let sane = magic == RECORD_MAGIC
        && (kind == KIND_DATA || kind == KIND_ZERO)
        && len > 0
        && offset.checked_add(len).is_some_and(|e| e <= old_size)
        && body <= MAX_DATA
        && size - at - RECORD_HEAD_LEN as u64 >= body;
    if !sane {
        return Ok(None);
    }
    data.resize(body as usize, 0);
    file.read_exact_at(data, at + RECORD_HEAD_LEN as u64)?;
    if crc64(&[&head[..24], data]) != crc {
        return Ok(None);
    }
    let record = Record {
        zero: kind == KIND_ZERO,
        offset,
        len,
        at: at + RECORD_HEAD_LEN as u64,
    };
    Ok(Some((record, at + RECORD_HEAD_LEN as u64 + body)))
}

/// The valid records of a journal, in order, and how it ends after the
/// last one.
fn read_records(file: &File, old_size: u64) -> io::Result<(Vec<Record>, Tail)> {
    let size = file.metadata()?.len();
    let mut at = HEADER_LEN as u64;
    let mut out = Vec::new();
    let mut data = Vec::new();
    while at < size {
        match record_at(file, at, size, old_size, &mut data)? {
            Some((r, next)) => {
                out.push(r);
                at = next;
            }
            None => {
                return Ok((out, Tail::Torn));
            }
        }
    }
    Ok((out, Tail::Clean))
}

/// Roll `target` back from `journal`: old size, records in reverse,
/// `fsync`, the journal removed.
fn apply(
    journal: &File,
    target: &File,
    old_size: u64,
    path: &Path,
    target_path: &Path,
) -> Result<Recovered, UndoError> {
    let shown = target_path.display();
    let (records, tail) =
        read_records(journal, old_size).map_err(io_err(format!("read {}", path.display())))?;
    let torn = tail == Tail::Torn;
    let restore = io_err(format!("restore {shown} from {}", path.display()));
    let mut bytes = 0;
    let result = (|| {
        target.set_len(old_size)?;
        let mut buf = Vec::new();
        for r in records.iter().rev() {
            if r.zero {
                zero_file_range(target.as_raw_fd(), r.offset, r.len)?;
            } else {
                buf.resize(r.len as usize, 0);
                journal.read_exact_at(&mut buf, r.at)?;
                target.write_all_at(&buf, r.offset)?;
            }
            bytes += r.len;
        }
        target.sync_all()
    })();
    result.map_err(restore)?;
    fs::remove_file(path).map_err(io_err(format!("remove {}", path.display())))?;
    sync_dir(path);
    Ok(Recovered {
        journal: path.to_path_buf(),
        ranges: records.len() as u64,
        bytes,
        old_size,
        torn,
    })
}

/// Roll back an interrupted in-place update of `target`, if its journal
/// is there: `None` if there is none, else what was restored. Call it
/// before anything else touches the path; the receiver does so for every
/// file destination. Refuses (and touches nothing) when a live receiver
/// holds the journal, when it is not a whole transit journal, and when it
/// was written for another file than the one at the path
/// ([`UndoError`]).
pub fn recover(target: &Path) -> Result<Option<Recovered>, UndoError> {
    let path = journal_path(target)?;
    let journal = loop {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(UndoError::NotAJournal {
                    target: target.to_path_buf(),
                    journal: path,
                })
            }
            Err(e) => return Err(io_err(format!("open {}", path.display()))(e)),
        };
        // SAFETY: flock on our own open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(UndoError::Busy {
                    target: target.to_path_buf(),
                    journal: path,
                });
            }
            return Err(io_err(format!("lock {}", path.display()))(e));
        }
        // The holder of the lock may have applied and removed it before
        // we got the lock: is this still the journal at the path?
        let ours = file.metadata().map(|m| m.ino()).ok();
        match fs::symlink_metadata(&path) {
            Ok(m) if Some(m.ino()) == ours => break file,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("look at {}", path.display()))(e)),
        }
    };
    let not_one = || UndoError::NotAJournal {
        target: target.to_path_buf(),
        journal: path.clone(),
    };
    if !journal.metadata().is_ok_and(|m| m.is_file()) {
        return Err(not_one());
    }
    let Some((old_size, ino)) =
        read_header(&journal).map_err(io_err(format!("read {}", path.display())))?
    else {
        return Err(not_one());
    };
    let file = match OpenOptions::new().read(true).write(true).open(target) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(UndoError::TargetGone {
                target: target.to_path_buf(),
                journal: path,
            })
        }
        Err(e) => return Err(io_err(format!("open {}", target.display()))(e)),
    };
    let found = file
        .metadata()
        .map_err(io_err(format!("look at {}", target.display())))?
        .ino();
    if found != ino {
        return Err(UndoError::OtherFile {
            target: target.to_path_buf(),
            journal: path,
            expected: ino,
            found,
        });
    }
    apply(&journal, &file, old_size, &path, target).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("transit-undo-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let d = scratch("records");
        let p = d.join("f");
        let old = pattern(5 * 4096 + 100, 3);
        fs::write(&p, &old).unwrap();
        let j = Journal::create(&p, 4096).unwrap();
        j.save(&[(0, 4096), (8192, 8192)], Change::Write).unwrap();
        // Saved already: nothing more is appended.
        let len = j.log.metadata().unwrap().len();
        j.save(&[(8192, 4096)], Change::Write).unwrap();
        assert_eq!(j.log.metadata().unwrap().len(), len);
        let (recs, tail) = read_records(&j.log, j.old_size).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(tail, Tail::Clean);
        // Half a record more: ignored.
        let mut extra = Vec::new();
        push_record(&mut extra, KIND_DATA, 4096, 4096, &old[4096..8192]);
        j.log.write_all_at(&extra[..100], len).unwrap();
        let (recs, tail) = read_records(&j.log, j.old_size).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(tail, Tail::Torn);
        // A flipped byte in a record's data ends the journal there.
        j.log.write_all_at(&[0xee], HEADER_LEN as u64 + 40).unwrap();
        let (recs, tail) = read_records(&j.log, j.old_size).unwrap();
        assert_eq!(recs.len(), 0);
        assert_eq!(tail, Tail::Torn);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn zeroing_zeros_and_holes_records_nothing() {
        let d = scratch("zeros");
        let p = d.join("f");
        {
            let f = File::create(&p).unwrap();
            f.set_len(8 << 20).unwrap();
            f.write_all_at(&[5u8; 4096], 16 << 10).unwrap();
            f.write_all_at(&[6u8; 4096], 5 << 20).unwrap();
        }
        let j = Journal::create(&p, 4096).unwrap();
        // Large (holes skipped by SEEK_DATA) and small (read) ranges.
        j.save(&[(0, 4 << 20), (5 << 20, 8192)], Change::Zero)
            .unwrap();
        let (recs, _) = read_records(&j.log, j.old_size).unwrap();
        let got: Vec<_> = recs.iter().map(|r| (r.offset, r.len, r.zero)).collect();
        assert_eq!(got, [(16 << 10, 4096, false), (5 << 20, 4096, false)]);
        // Writing over a hole records that it was zeros, without data.
        j.save(&[(6 << 20, 2 << 20)], Change::Write).unwrap();
        let (recs, _) = read_records(&j.log, j.old_size).unwrap();
        let last = recs.last().unwrap();
        assert!(last.zero && last.offset == 6 << 20);
        assert_eq!(recs.iter().filter(|r| !r.zero).count(), 2);
        j.rollback().unwrap().unwrap();
        fs::remove_dir_all(&d).unwrap();
    }

    /// A damaged journal (a byte flipped or the file cut anywhere after
    /// its header) never panics the reader, and what it reads is always a
    /// prefix of what was written: a record is applied only if it is
    /// whole and its checksum holds, and nothing after a bad one is.
    #[test]
    fn damage_anywhere_reads_as_a_prefix_of_the_records() {
        let d = scratch("damage");
        let p = d.join("f");
        let old = pattern(64 * 4096, 9);
        fs::write(&p, &old).unwrap();
        let j = Journal::create(&p, 4096).unwrap();
        for (k, page) in [3u64, 17, 18, 40, 41, 42, 60].iter().enumerate() {
            let change = if k % 3 == 2 {
                Change::Zero
            } else {
                Change::Write
            };
            j.save(&[(page * 4096, 4096)], change).unwrap();
        }
        let (truth, tail) = read_records(&j.log, j.old_size).unwrap();
        assert_eq!(tail, Tail::Clean);
        let key = |r: &Record| (r.offset, r.len, r.zero);
        let truth: Vec<_> = truth.iter().map(key).collect();
        let pristine = fs::read(j.path()).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let scratch_log = d.join("log");
        for round in 0..400 {
            let mut bytes = pristine.clone();
            let at = HEADER_LEN + (next() as usize) % (bytes.len() - HEADER_LEN);
            if round % 2 == 0 {
                bytes[at] ^= 1 + (next() % 255) as u8;
            } else {
                bytes.truncate(at);
            }
            fs::write(&scratch_log, &bytes).unwrap();
            let f = File::open(&scratch_log).unwrap();
            let (got, tail) = read_records(&f, j.old_size).unwrap();
            let got: Vec<_> = got.iter().map(key).collect();
            assert!(
                got.len() <= truth.len() && got[..] == truth[..got.len()],
                "round {round}: damage at {at} read {got:?}, wrote {truth:?}"
            );
            assert!(got.len() == truth.len() || tail == Tail::Torn);
        }
        fs::remove_dir_all(&d).unwrap();
    }

    /// A torn last append whose data holds the bytes of a valid record
    /// (the file updated in place is a disk image holding a journal) ends
    /// the journal there: the records before it are applied. (A scan for
    /// valid records after a bad one, tried and dropped, took this for
    /// damage and refused to roll the file back.)
    #[test]
    fn a_torn_append_holding_record_bytes_is_a_torn_end() {
        let d = scratch("embedded");
        let p = d.join("disk.img");
        let mut old = vec![0x11u8; 4 * 4096];
        let mut inner = Vec::new();
        push_record(&mut inner, KIND_DATA, 0, 100, &[0x22u8; 100]);
        old[4096 + 200..4096 + 200 + inner.len()].copy_from_slice(&inner);
        fs::write(&p, &old).unwrap();
        let j = Journal::create(&p, 4096).unwrap();
        j.save(&[(0, 4096)], Change::Write).unwrap();
        let clean = j.log.metadata().unwrap().len();
        // The next append (page 1) cut by a crash after 1000 bytes of data.
        let mut rec = Vec::new();
        push_record(&mut rec, KIND_DATA, 4096, 4096, &old[4096..8192]);
        j.log
            .write_all_at(&rec[..RECORD_HEAD_LEN + 1000], clean)
            .unwrap();
        let (recs, tail) = read_records(&j.log, j.old_size).unwrap();
        assert_eq!((recs.len(), tail), (1, Tail::Torn));
        fs::remove_dir_all(&d).unwrap();
    }
}
