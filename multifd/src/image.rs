//! RAM-like images: what a sender reads pages from and a receiver writes
//! pages into.
//!
//! Sources ([`SourceImage`]):
//! * [`SourceImage::generate`]: a deterministic image from an [`ImageSpec`]
//!   (size, zero-page ratio, seed, random or compressible content),
//!   generated in parallel before any transfer starts, so generation never
//!   counts in transfer timing;
//! * [`SourceImage::map_file`]: a file mapped read-only (the file must not
//!   be truncated while mapped: reading past its new end raises SIGBUS, as
//!   with any `mmap`);
//! * [`SourceImage::from_vec`], [`SourceImage::copy_from_slice`],
//!   [`SourceImage::from_static`]: bytes the caller already has.
//!
//! Destinations ([`DestImage`]):
//! * [`DestImage::anonymous`]: anonymous memory (on transparent huge pages
//!   when pre-faulted; otherwise each page allocated as its data arrives,
//!   by the receiver's `UFFDIO_COPY` where userfaultfd is available, else
//!   by a page fault),
//!   optionally pre-faulted (`MADV_POPULATE_WRITE`, on every core) so page
//!   faults do not land in the transfer;
//! * [`DestImage::create_file`]: a new file at a temporary path next to the
//!   target, sized with `ftruncate` (holes), written with `pwrite`;
//!   [`DestImage::persist`] syncs it and renames it into place, and dropping
//!   an image that was not persisted unlinks the temporary file.
//!
//! A new destination is *fresh*: every byte is zero, so the receiver skips
//! zero pages that were never written (writing zeros into fresh memory
//! would only cost page faults) and writes zeros only over pages that
//! received data before (passes 2..N). An image that took part in a
//! session is no longer fresh.
//!
//! # Example
//!
//! ```
//! use transit_multifd::image::{Content, ImageSpec, SourceImage};
//!
//! let spec = ImageSpec { size: 1 << 20, page_size: 4096, zero_ratio: 0.5, seed: 42, content: Content::Random };
//! let a = SourceImage::generate(&spec)?;
//! let b = SourceImage::generate(&spec)?;
//! assert_eq!(a.as_slice(), b.as_slice()); // deterministic
//! let zero = a.as_slice().chunks(4096).filter(|p| p.iter().all(|&x| x == 0)).count() as u64;
//! assert_eq!(zero, spec.zero_pages());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::output::TempOutput;
use crate::undo::Journal;
use std::ptr::NonNull;

/// An `mmap`ed region, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is plain memory owned by this value; access is
// synchronized by the owners (shared reads, or exclusive writes proven by
// the receiver's page claims).
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers and shared
// slices.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Anonymous read-write memory, all zero. With `populate`, it asks for
    /// transparent huge pages (`MADV_HUGEPAGE`: a 2 MiB fault instead of
    /// 512 small ones, and fewer TLB misses while the kernel copies pages
    /// in or out) and faults every page in now, by every core at once
    /// ([`populate_write`]), so no fault lands in the transfer.
    fn anonymous(len: usize, populate: bool) -> io::Result<Mapping> {
        let map = Mapping::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )?;
        // Huge pages only where every page is faulted in up front anyway
        // (a generated source, a prefaulted destination). A destination
        // faulted in as data arrives stays on small pages: a huge page
        // would make one data page cost 2 MiB of memory (a 50%-zero 1 GiB
        // image took 1030 MiB instead of 519), and its fault may stall in
        // direct compaction in the middle of the transfer, for no gain in
        // speed (docs/benchmarks.md).
        if len != 0 && populate {
            // SAFETY: advice on our own live mapping; it changes no
            // contents. Failure (THP compiled out) only loses the speed-up.
            unsafe { libc::madvise(map.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        }
        if populate {
            populate_write(&map)?;
        }
        Ok(map)
    }

    fn map(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr null); no
        // existing memory is affected. The result is checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap at 0"))?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping (or dangling with len 0)
        // readable for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` gives exclusive access; callers
        // only use this on writable mappings.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmapping the region this value mapped; no slice
            // borrowed from it outlives self.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Fault in every page of a writable mapping now, as the first write
/// would (`MADV_POPULATE_WRITE`), split over every core: zeroing fresh
/// memory is the cost, and one core alone does it at a fraction of memory
/// bandwidth. Kernels before 5.14 lack the advice; there every page is
/// touched instead.
fn populate_write(map: &Mapping) -> io::Result<()> {
    const ALIGN: usize = 2 << 20;
    let len = map.len;
    if len == 0 {
        return Ok(());
    }
    // Below this, a thread costs more than it saves.
    const PARALLEL_FROM: usize = 64 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || len < PARALLEL_FROM {
        return populate_range(map.as_ptr() as usize, len);
    }
    let per = len.div_ceil(threads).next_multiple_of(ALIGN);
    let base = map.as_ptr() as usize;
    let results: Vec<io::Result<()>> = std::thread::scope(|s| {
        let parts: Vec<_> = (0..len)
            .step_by(per)
            .map(|start| {
                let n = per.min(len - start);
                s.spawn(move || populate_range(base + start, n))
            })
            .collect();
        parts
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("populate thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

fn populate_range(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: addr..addr+len lies inside a live read-write mapping owned
    // by the caller; populating changes no contents.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    // Older kernel: write one byte per small page.
    // SAFETY: as above.
    unsafe { touch_pages(addr, len) };
    Ok(())
}

/// Write a zero into every 4 KiB page of `addr..addr + len`, faulting it
/// in (the memory is fresh, so its contents stay zero).
///
/// # Safety
/// The range lies inside a live, writable, all-zero mapping of the caller.
unsafe fn touch_pages(addr: usize, len: usize) {
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the mapping (the caller's contract); volatile so
        // the write that faults the page in is not optimized away.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u8, 0) };
    }
}

/// `lseek(fd, off, whence)` for `SEEK_DATA`/`SEEK_HOLE`: `None` when
/// there is no data (or hole) at or after `off` (`ENXIO`).
fn seek(file: &File, off: u64, whence: i32) -> io::Result<Option<u64>> {
    // SAFETY: lseek on our own open descriptor; it moves only the file
    // offset, which nothing here uses (all I/O is positioned).
    let r = unsafe { libc::lseek(file.as_raw_fd(), off as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        return Ok(None);
    }
    Err(e)
}

/// The first byte of data at or after `off` (`SEEK_DATA`); `None` if
/// only holes follow.
pub(crate) fn seek_data(file: &File, off: u64) -> io::Result<Option<u64>> {
    seek(file, off, libc::SEEK_DATA)
}

/// The first hole at or after `off` (`SEEK_HOLE`; the end of the file
/// counts as one); `None` at or past the end.
fn seek_hole(file: &File, off: u64) -> io::Result<Option<u64>> {
    seek(file, off, libc::SEEK_HOLE)
}

/// The data extents of `file` (`size` bytes) as byte ranges, by
/// `SEEK_DATA`/`SEEK_HOLE` (a file system without holes reports one
/// extent: the whole file).
fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(start) = seek_data(file, at)? else {
            break;
        };
        let end = seek_hole(file, start)?.unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        out.push((start, end));
        at = end;
    }
    Ok(out)
}

/// `pwrite` all of `buf` at `off`.
pub(crate) fn pwrite_all(fd: RawFd, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: pwrite reads `buf.len()` bytes of the live slice `buf`;
        // `fd` is open for the call.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
        off += n as u64;
    }
    Ok(())
}

/// Make `len` bytes at `off` of a file read as zeros: punch a hole, or
/// write zeros where the file system cannot.
pub(crate) fn zero_file_range(fd: RawFd, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on an open file; no memory is involved.
    let r = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64) as usize;
        pwrite_all(fd, &ZEROS[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Content of generated non-zero pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Content {
    /// Pseudo-random bytes (incompressible).
    #[default]
    Random,
    /// Text-like bytes: a few random words repeated over the page (a
    /// general-purpose compressor shrinks it several times).
    Compressible,
}

/// How to generate a source image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageSpec {
    /// Length in bytes (the last page may be partial).
    pub size: u64,
    /// Page size (zero pages are chosen per page).
    pub page_size: u32,
    /// Share of zero pages, `0.0..=1.0`: each page is zero when a hash of
    /// (seed, page index) falls below the ratio, so the count is close to
    /// `ratio * pages`, exact at 0 and 1.
    pub zero_ratio: f64,
    /// Seed: the same spec always gives the same bytes.
    pub seed: u64,
    /// Non-zero page content.
    pub content: Content,
}

impl ImageSpec {
    /// Pages in the image.
    pub fn pages(&self) -> u64 {
        self.size.div_ceil(u64::from(self.page_size.max(1)))
    }

    /// True if page `index` is a zero page.
    pub fn is_zero_page(&self, index: u64) -> bool {
        if self.zero_ratio <= 0.0 {
            return false;
        }
        if self.zero_ratio >= 1.0 {
            return true;
        }
        let threshold = (self.zero_ratio * (u64::MAX as f64)) as u64;
        splitmix(self.seed ^ 0x5eed_0000_0000_0000 ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            < threshold
    }

    /// Number of zero pages.
    pub fn zero_pages(&self) -> u64 {
        (0..self.pages()).filter(|&i| self.is_zero_page(i)).count() as u64
    }

    fn check(&self) -> io::Result<()> {
        if !self.page_size.is_power_of_two()
            || !(crate::wire::MIN_PAGE_SIZE..=crate::wire::MAX_PAGE_SIZE).contains(&self.page_size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "page size {} is not a power of two in 512..=65536",
                    self.page_size
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.zero_ratio) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("zero-page ratio {} is not in 0..=1", self.zero_ratio),
            ));
        }
        Ok(())
    }
}

#[inline]
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Fill one non-zero page deterministically from (seed, index).
fn fill_page(spec: &ImageSpec, index: u64, page: &mut [u8]) {
    let mut state = splitmix(spec.seed ^ index.wrapping_mul(0xd134_2543_de82_ef95));
    // wyrand: one multiply per 8 bytes.
    let mut next = || {
        state = state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    };
    match spec.content {
        Content::Random => {
            let mut words = page.chunks_exact_mut(8);
            for w in &mut words {
                w.copy_from_slice(&next().to_ne_bytes());
            }
            let tail = words.into_remainder();
            let last = next().to_ne_bytes();
            tail.copy_from_slice(&last[..tail.len()]);
        }
        Content::Compressible => {
            // Eight random lower-case words of 8 letters, repeated.
            let mut dict = [[0u8; 8]; 8];
            for word in dict.iter_mut() {
                let r = next();
                for (i, c) in word.iter_mut().enumerate() {
                    *c = b'a' + ((r >> (i * 5)) % 26) as u8;
                }
                word[7] = b' ';
            }
            let mut pick = next();
            for (i, w) in page.chunks_mut(8).enumerate() {
                if i % 16 == 0 {
                    pick = next();
                }
                let word = &dict[((pick >> ((i % 16) * 3)) & 7) as usize];
                w.copy_from_slice(&word[..w.len()]);
            }
        }
    }
    // A data page is never all zero.
    if let Some(b) = page.first_mut() {
        *b |= 1;
    }
}

enum SourceMem {
    Map { map: Mapping, writable: bool },
    Vec(Vec<u8>),
    Static(&'static [u8]),
}

/// A sender's image: memory the sender reads pages from.
pub struct SourceImage {
    mem: SourceMem,
    /// A mapped file's data extents (`SEEK_DATA`/`SEEK_HOLE`), byte
    /// ranges in order; everything else is a hole.
    extents: Option<Vec<(u64, u64)>>,
}

impl std::fmt::Debug for SourceImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceImage")
            .field("len", &self.len())
            .field("writable", &self.is_writable())
            .finish()
    }
}

impl SourceImage {
    /// Generate the image described by `spec` (deterministic from the
    /// seed), using every core.
    pub fn generate(spec: &ImageSpec) -> io::Result<SourceImage> {
        spec.check()?;
        let len = usize::try_from(spec.size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "image too large"))?;
        // Pre-populate: the kernel zeroes pages in bulk much faster than
        // first-touch faults, and zero pages then need no write at all.
        let mut map = Mapping::anonymous(len, true)?;
        let page = spec.page_size as usize;
        let data = map.as_mut_slice();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pages = spec.pages() as usize;
        let per = pages.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (t, part) in data.chunks_mut(per * page).enumerate() {
                s.spawn(move || {
                    for (i, p) in part.chunks_mut(page).enumerate() {
                        let index = (t * per + i) as u64;
                        if !spec.is_zero_page(index) {
                            fill_page(spec, index, p);
                        }
                    }
                });
            }
        });
        Ok(SourceImage {
            mem: SourceMem::Map {
                map,
                writable: true,
            },
            extents: None,
        })
    }

    /// Map the file at `path` read-only as the image, and find its data
    /// extents (`SEEK_DATA`/`SEEK_HOLE`): the sender sends holes as ranges
    /// without reading them, and releases the pages it read after each
    /// packet, so neither holes nor the file's size cost memory.
    pub fn map_file(path: &Path) -> io::Result<SourceImage> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let len = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        let map = Mapping::map(len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd())?;
        Ok(SourceImage {
            mem: SourceMem::Map {
                map,
                writable: false,
            },
            extents: data_extents(&file, size).ok(),
        })
    }

    /// A mapped file's data extents as byte ranges `(start, end)` in
    /// order (everything between them is a hole); `None` for images that
    /// are not files, or where the file system cannot tell.
    pub fn data_extents(&self) -> Option<&[(u64, u64)]> {
        self.extents.as_deref()
    }

    /// True for a read-only mapped file: pages read from it may be
    /// released after use (the page cache keeps them).
    pub(crate) fn is_mapped_file(&self) -> bool {
        matches!(
            self.mem,
            SourceMem::Map {
                writable: false,
                ..
            }
        )
    }

    /// Use `v` as the image (no copy).
    pub fn from_vec(v: Vec<u8>) -> SourceImage {
        SourceImage {
            mem: SourceMem::Vec(v),
            extents: None,
        }
    }

    /// Copy `data` into a new anonymous mapping.
    pub fn copy_from_slice(data: &[u8]) -> io::Result<SourceImage> {
        let mut map = Mapping::anonymous(data.len(), true)?;
        map.as_mut_slice().copy_from_slice(data);
        Ok(SourceImage {
            mem: SourceMem::Map {
                map,
                writable: true,
            },
            extents: None,
        })
    }

    /// Use static bytes as the image (read-only).
    pub fn from_static(data: &'static [u8]) -> SourceImage {
        SourceImage {
            mem: SourceMem::Static(data),
            extents: None,
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.mem {
            SourceMem::Map { map, .. } => map.as_slice(),
            SourceMem::Vec(v) => v,
            SourceMem::Static(s) => s,
        }
    }

    /// The bytes, writable (`None` for a mapped file or static bytes).
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        match &mut self.mem {
            SourceMem::Map {
                map,
                writable: true,
            } => Some(map.as_mut_slice()),
            SourceMem::Vec(v) => Some(v),
            _ => None,
        }
    }

    /// True if [`as_mut_slice`](Self::as_mut_slice) gives access.
    pub fn is_writable(&self) -> bool {
        matches!(
            self.mem,
            SourceMem::Map { writable: true, .. } | SourceMem::Vec(_)
        )
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True for an empty image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A receiver's image: memory the receiver writes pages into, or a file
/// it writes them to.
pub struct DestImage {
    /// The memory of a memory image; empty for a file.
    map: Mapping,
    len: usize,
    fresh: bool,
    file: Option<FileOut>,
    /// Delta: the older copy that kept pages are copied from as their
    /// KEEP ranges arrive (the output itself starts empty), and what it
    /// looked like when it was hashed (inode, size, mtime, ctime).
    base: Option<(File, BaseStamp)>,
    /// The output holds the older copy already (cloned or copied while it
    /// was hashed): kept ranges need no copy.
    kept_in_place: bool,
    /// Every page of a memory image was faulted in when it was made.
    populated: bool,
}

/// Where a file destination's bytes go.
enum FileOut {
    /// A new file, renamed over the target once complete.
    Temp(TempOutput),
    /// The target itself, updated in place under an undo journal.
    InPlace(InPlace),
}

/// An in-place update (`RecvConfig::inplace`): rolled back when dropped
/// before it was committed.
struct InPlace {
    journal: Arc<Journal>,
    /// Set on the file when it is committed (`--mode`).
    mode: Option<u32>,
}

impl Drop for InPlace {
    fn drop(&mut self) {
        // Best effort: the receiver rolls back explicitly and reports a
        // failure; one that fails here leaves the journal for the next
        // receive on the path.
        let _ = self.journal.rollback();
    }
}

impl FileOut {
    fn file(&self) -> &File {
        match self {
            FileOut::Temp(t) => t.file(),
            FileOut::InPlace(p) => p.journal.file(),
        }
    }

    fn target(&self) -> &Path {
        match self {
            FileOut::Temp(t) => t.target(),
            FileOut::InPlace(p) => p.journal.target(),
        }
    }

    fn persist(&mut self) -> io::Result<()> {
        match self {
            FileOut::Temp(t) => t.persist(),
            FileOut::InPlace(p) => {
                if let (Some(mode), true) = (p.mode, p.journal.is_open()) {
                    let fd = p.journal.file().as_raw_fd();
                    // SAFETY: fchmod on the open file being updated.
                    if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                p.journal.commit().map_err(io::Error::other)
            }
        }
    }
}

/// What an older copy looked like when it was hashed: if it changes
/// before the output is in place, kept pages may not match their hashes.
type BaseStamp = (u64, u64, i64, i64, i64, i64);

/// An image's length in memory terms.
fn image_len(size: u64) -> io::Result<usize> {
    usize::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "image too large"))
}

fn stamp(f: &File) -> io::Result<BaseStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

impl std::fmt::Debug for DestImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestImage")
            .field("len", &self.len)
            .field("fresh", &self.fresh)
            .field("file", &self.file.as_ref().map(|t| t.target()))
            .field("in_place", &matches!(self.file, Some(FileOut::InPlace(_))))
            .finish()
    }
}

impl DestImage {
    /// Anonymous memory of `size` bytes, all zero. With `prefault`, every
    /// page is faulted in now (`MADV_POPULATE_WRITE`, on every core)
    /// instead of during the transfer.
    pub fn anonymous(size: u64, prefault: bool) -> io::Result<DestImage> {
        let len = image_len(size)?;
        Ok(DestImage {
            map: Mapping::anonymous(len, prefault)?,
            len,
            fresh: true,
            file: None,
            base: None,
            kept_in_place: false,
            populated: prefault,
        })
    }

    /// A file image of `len` bytes written with `pwrite` through `file`
    /// (no mapping): `fresh` when every page starts as a hole, `base` the
    /// older copy to check at the commit, `kept_in_place` when kept pages
    /// are already in the file.
    fn unmapped(
        len: usize,
        file: FileOut,
        fresh: bool,
        base: Option<(File, BaseStamp)>,
        kept_in_place: bool,
    ) -> io::Result<DestImage> {
        Ok(DestImage {
            map: Mapping::map(0, 0, 0, -1)?,
            len,
            fresh,
            file: Some(file),
            base,
            kept_in_place,
            populated: false,
        })
    }

    /// A new file of `size` bytes that becomes `target` on
    /// [`persist`](Self::persist). It is created (exclusively) at a
    /// temporary path in the same directory ([`TempOutput`]: mode `mode`,
    /// else the existing target's, else `0600`) and sized with `ftruncate`,
    /// so pages never written stay holes. It is not mapped: the receiver
    /// writes pages with `pwrite` from small per-channel buffers, so no
    /// page is zero-filled before its data arrives and the process's
    /// memory does not grow with the file.
    pub fn create_file(target: &Path, size: u64, mode: Option<u32>) -> io::Result<DestImage> {
        let len = image_len(size)?;
        // From here `temp` unlinks the file if anything fails.
        let temp = TempOutput::create(target, mode)?;
        temp.file().set_len(size)?;
        DestImage::unmapped(len, FileOut::Temp(temp), true, None, false)
    }

    /// [`create_file`](Self::create_file) for a delta transfer against
    /// `old` (the file at the target): the temporary file starts as a
    /// copy of `old` (a clone where the file system shares blocks, else
    /// written while `old` is read to be hashed, in one pass on every
    /// core, its zero blocks left as holes), cut or extended to `size`.
    /// The hashes of `old`'s chunks of `chunk_size` are returned; kept
    /// pages are then in place, and pages that differ are overwritten as
    /// they arrive. `old` is kept to check at the commit that it did not
    /// change meanwhile.
    pub fn create_file_from(
        target: &Path,
        old: File,
        size: u64,
        mode: Option<u32>,
        chunk_size: u32,
    ) -> io::Result<(DestImage, Vec<u64>)> {
        let len = image_len(size)?;
        let temp = TempOutput::create(target, mode)?;
        let before = stamp(&old)?;
        let have = before.1.min(size);
        let hashes = if clone_file(&old, temp.file()) {
            crate::delta::hash_file(&old, have, chunk_size)?
        } else {
            temp.file().set_len(have)?;
            crate::delta::hash_file_into(&old, have, chunk_size, Some(temp.file()))?
        };
        temp.file().set_len(size)?;
        Ok((
            DestImage::unmapped(len, FileOut::Temp(temp), false, Some((old, before)), true)?,
            hashes,
        ))
    }

    /// A file destination that survives failures (`recv --resume`): the
    /// partial file next to `target` ([`TempOutput::open_partial`]),
    /// written in place. An interrupted run's partial file is hashed in
    /// chunks of `chunk_size` (the hashes are returned: a delta against
    /// it, whose kept pages are already in place); without one, and with
    /// `from_target`, a delta against the file at `target` as in
    /// [`create_file_from`](Self::create_file_from); else it starts empty
    /// (no hashes). The partial file is renamed over the target once the
    /// session is verified, and left in place otherwise.
    pub fn open_partial(
        target: &Path,
        size: u64,
        mode: Option<u32>,
        chunk_size: u32,
        from_target: bool,
    ) -> io::Result<(DestImage, Option<Vec<u64>>)> {
        let len = image_len(size)?;
        let (temp, existed) = TempOutput::open_partial(target, mode)?;
        let held = temp.file().metadata()?.len();
        let (hashes, base, fresh) = if existed && held > 0 {
            let h = crate::delta::hash_file(temp.file(), held.min(size), chunk_size)?;
            (Some(h), None, false)
        } else {
            let old = from_target
                .then(|| File::open(target).ok())
                .flatten()
                .filter(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() > 0));
            match old {
                Some(old) => {
                    let before = stamp(&old)?;
                    let h = crate::delta::hash_file(&old, before.1.min(size), chunk_size)?;
                    (Some(h), Some((old, before)), true)
                }
                None => (None, None, true),
            }
        };
        temp.file().set_len(size)?;
        Ok((
            DestImage::unmapped(len, FileOut::Temp(temp), fresh, base, false)?,
            hashes,
        ))
    }

    /// A file destination that is the older copy itself, updated in place
    /// under `journal` ([`crate::undo`], `RecvConfig::inplace`): the file
    /// is hashed in chunks of `chunk_size` where it lies (no copy; the
    /// hashes are returned for the Have record), then cut or extended to
    /// `size` (a cut tail saved in the journal first). Every write of the
    /// session saves what it overwrites first;
    /// [`persist_in_place`](Self::persist_in_place) commits (setting
    /// `mode` on the file, if given), and dropping the image before that
    /// rolls the file back.
    pub(crate) fn in_place(
        journal: Journal,
        size: u64,
        mode: Option<u32>,
        chunk_size: u32,
    ) -> io::Result<(DestImage, Vec<u64>)> {
        let len = image_len(size)?;
        // From here a failure rolls back (the cut, if it happened).
        let out = InPlace {
            journal: Arc::new(journal),
            mode,
        };
        let have = out.journal.old_size().min(size);
        let hashes = crate::delta::hash_file(out.journal.file(), have, chunk_size)?;
        out.journal.set_len(size)?;
        Ok((
            DestImage::unmapped(len, FileOut::InPlace(out), false, None, true)?,
            hashes,
        ))
    }

    /// The undo journal of an in-place update.
    pub(crate) fn undo(&self) -> Option<&Arc<Journal>> {
        match &self.file {
            Some(FileOut::InPlace(p)) => Some(&p.journal),
            _ => None,
        }
    }

    /// Delta: copy the kept range `[offset, offset + len)` from the older
    /// copy into a file destination that started empty (nothing to do
    /// when the destination is the older copy itself, as when resuming).
    pub(crate) fn copy_kept(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.kept_in_place {
            return Ok(());
        }
        match (&self.base, &self.file) {
            (Some((base, _)), Some(t)) => copy_range_at(base, t.file(), offset, len),
            _ => Ok(()),
        }
    }

    /// The bytes of a memory image (empty for a file destination, whose
    /// bytes are in the file).
    pub fn as_slice(&self) -> &[u8] {
        self.map.as_slice()
    }

    /// The bytes of a memory image, writable (empty for a file
    /// destination).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.fresh = false;
        self.map.as_mut_slice()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty image.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True while no byte was written: every byte is zero.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// True for fresh memory none of whose pages exist yet: anonymous,
    /// not populated, never written.
    pub(crate) fn is_untouched_memory(&self) -> bool {
        self.fresh && self.file.is_none() && !self.populated && self.len != 0
    }

    pub(crate) fn mark_used(&mut self) {
        self.fresh = false;
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The file of a file destination.
    pub(crate) fn file(&self) -> Option<&File> {
        self.file.as_ref().map(|t| t.file())
    }

    /// The temporary path of a file destination (`None` for one updated
    /// in place).
    pub fn temp_path(&self) -> Option<&Path> {
        match &self.file {
            Some(FileOut::Temp(t)) => Some(t.temp_path()),
            _ => None,
        }
    }

    /// True for a file destination updated where it lies, under an undo
    /// journal (`RecvConfig::inplace` with an existing file).
    pub fn is_in_place(&self) -> bool {
        matches!(self.file, Some(FileOut::InPlace(_)))
    }

    /// True for a file destination.
    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }

    /// Make a file destination durable and move it into place: `fsync`,
    /// rename to the target, `fsync` the directory; for one updated in
    /// place, `fsync` it and remove its undo journal
    /// ([`Journal::commit`](crate::undo::Journal::commit)). Calling it
    /// again does nothing. An anonymous image has nothing to persist.
    pub fn persist_in_place(&mut self) -> io::Result<()> {
        let Some(t) = self.file.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an anonymous image has no file to persist",
            ));
        };
        // Delta: kept pages were verified by the hashes of the older copy
        // taken before the transfer; had it changed since, the copied
        // pages might not be what was verified.
        if let Some((base, before)) = &self.base {
            if stamp(base)? != *before {
                return Err(io::Error::other(
                    "the older copy (the file at the output path) changed during the transfer; nothing was replaced",
                ));
            }
        }
        t.persist()
    }

    /// [`persist_in_place`](Self::persist_in_place), returning the target
    /// path.
    pub fn persist(mut self) -> io::Result<PathBuf> {
        self.persist_in_place()?;
        Ok(self
            .file
            .as_ref()
            .map(|t| t.target().to_path_buf())
            .unwrap_or_default())
    }
}

/// Make `to` (empty) share `from`'s blocks (`FICLONE`: btrfs, XFS and
/// others); false where the file system cannot (tmpfs, ext4), and `to` is
/// left empty.
fn clone_file(from: &File, to: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are
    // open for the call and no memory is passed.
    unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) == 0 }
}

/// Copy `len` bytes at `offset` of `from` into `to` at the same offset, in
/// the kernel (`copy_file_range`: a reflink or server-side copy where the
/// file system offers one), falling back to read and write. A range past
/// the end of `from` copies what there is (the rest stays zero).
fn copy_range_at(from: &File, to: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let len = from.metadata()?.len().saturating_sub(offset).min(len);
    let (start, end) = (offset, offset + len);
    let mut done = start;
    while done < end {
        let mut off_in = done as libc::loff_t;
        let mut off_out = done as libc::loff_t;
        let want = (end - done).min(1 << 30) as usize;
        // SAFETY: both fds are open for the call; the offsets are ours.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the older copy shrank while it was copied",
            ));
        }
        let e = io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        ) {
            return Err(e);
        }
        // No in-kernel copy between these files: plain reads and writes.
        let mut buf = vec![0u8; 1 << 20];
        while done < end {
            let l = (end - done).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..l], done)?;
            to.write_all_at(&buf[..l], done)?;
            done += l as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_zero_and_one_are_exact() {
        let mut spec = ImageSpec {
            size: 64 * 4096 + 100,
            page_size: 4096,
            zero_ratio: 0.0,
            seed: 1,
            content: Content::Random,
        };
        let img = SourceImage::generate(&spec).unwrap();
        assert!(img
            .as_slice()
            .chunks(4096)
            .all(|p| p.iter().any(|&b| b != 0)));
        spec.zero_ratio = 1.0;
        let img = SourceImage::generate(&spec).unwrap();
        assert!(img.as_slice().iter().all(|&b| b == 0));
        assert_eq!(spec.zero_pages(), 65);
    }

    #[test]
    fn different_seeds_give_different_images() {
        let mut spec = ImageSpec {
            size: 1 << 16,
            page_size: 4096,
            zero_ratio: 0.3,
            seed: 1,
            content: Content::Compressible,
        };
        let a = SourceImage::generate(&spec).unwrap();
        spec.seed = 2;
        let b = SourceImage::generate(&spec).unwrap();
        assert_ne!(a.as_slice(), b.as_slice());
    }

    /// Pages of `map` that are resident, by `mincore`.
    fn resident_pages(map: &Mapping) -> usize {
        let pages = map.len.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: mincore on our own live mapping, with one byte of
        // output per page.
        let rc = unsafe { libc::mincore(map.as_ptr().cast(), map.len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn populate_faults_in_every_page_serially_and_in_parallel() {
        for len in [3 * 4096 + 100, 70 << 20] {
            let map = Mapping::anonymous(len, false).unwrap();
            assert_eq!(resident_pages(&map), 0, "len {len}");
            populate_write(&map).unwrap();
            assert_eq!(resident_pages(&map), len.div_ceil(4096), "len {len}");
            assert!(map.as_slice().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn touching_pages_faults_them_in_and_keeps_them_zero() {
        let len = 16 * 4096;
        let map = Mapping::anonymous(len, false).unwrap();
        assert_eq!(resident_pages(&map), 0);
        // SAFETY: the whole fresh, writable, zero mapping.
        unsafe { touch_pages(map.as_ptr() as usize, len) };
        assert_eq!(resident_pages(&map), 16);
        assert!(map.as_slice().iter().all(|&b| b == 0));
    }
}
