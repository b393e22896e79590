//! Fresh anonymous memory filled page by page without zeroing it first.
//!
//! A page of fresh anonymous memory is allocated on its first touch, and
//! the kernel clears it before anything is written: a receiver that reads
//! packets straight into a fresh memory destination pays a page fault and
//! a clear for every page, then the copy over the cleared page. A
//! [`Filler`] registers the destination with `userfaultfd(2)` and places
//! each run of received pages with `UFFDIO_COPY`: the kernel allocates the
//! pages and copies the data in, one call a run, with no clear and no
//! fault (the mechanism QEMU's postcopy migration uses to place pages).
//!
//! Limits:
//! - Only pages never touched can be filled; a page present already (a
//!   later pass sending it again) is copied over normally.
//! - While the filler lives, touching a missing page of the range from
//!   user space raises `SIGBUS` (`UFFD_FEATURE_SIGBUS`, no fault handler
//!   runs) and the kernel's own accesses fail (`UFFD_USER_MODE_ONLY`):
//!   nothing may read or write the range but [`Filler::fill`] until the
//!   filler is dropped, which unregisters the range (missing pages then
//!   read as zeros again).
//! - Where `userfaultfd` is not available (an old kernel, a seccomp
//!   filter, `vm.unprivileged_userfaultfd` forbidding even user-mode
//!   handling), [`Filler::register`] says so and the caller writes as
//!   before.
//!
//! ```ignore
//! // (crate-internal) A fresh 1 MiB anonymous mapping at `base`:
//! let filler = Filler::register(base, 1 << 20).expect("userfaultfd");
//! unsafe { filler.fill(base, &page_data)? };
//! drop(filler); // the range is plain memory again
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `UFFD_API` and the ioctls of `<linux/userfaultfd.h>` (x86-64, aarch64:
/// `_IOWR(0xAA, nr, size)`).
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// A registered range of fresh anonymous memory (see the module docs).
pub(crate) struct Filler {
    fd: OwnedFd,
    page: usize,
}

impl Filler {
    /// Register `len` bytes at `base` (page-aligned, the start of a fresh
    /// private anonymous mapping of at least `len` bytes rounded up to a
    /// page); `None` where `userfaultfd` cannot be used.
    pub(crate) fn register(base: *mut u8, len: usize) -> Option<Filler> {
        let page = page_size();
        if len == 0 || !(base as usize).is_multiple_of(page) {
            return None;
        }
        // SAFETY: a syscall that creates a new descriptor; checked below.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
        let fd = libc::c_int::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY: a descriptor this process just opened and owns alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_SIGBUS,
            ioctls: 0,
        };
        // SAFETY: the ioctl reads and writes `api`, a live struct of the
        // size the request number encodes.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
            return None;
        }
        let mut reg = UffdioRegister {
            start: base as u64,
            len: len.div_ceil(page).checked_mul(page)? as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: as above; the range is the caller's own mapping.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
            return None;
        }
        if reg.ioctls & (1 << 3) == 0 {
            // The range cannot take UFFDIO_COPY (bit _UFFDIO_COPY).
            return None;
        }
        Some(Filler { fd, page })
    }

    /// Copy `src` to `dst`, allocating the missing pages with their
    /// contents; pages present already are overwritten in place.
    ///
    /// # Safety
    /// `dst` is page-aligned, inside the registered range with
    /// `src.len()` rounded up to a page, and no other thread accesses
    /// those pages meanwhile.
    pub(crate) unsafe fn fill(&self, dst: *mut u8, src: &[u8]) -> io::Result<()> {
        let whole = src.len() - src.len() % self.page;
        // SAFETY: forwarded from the caller; `src` holds `whole` bytes.
        unsafe { self.copy(dst, src.as_ptr(), whole)? };
        if whole < src.len() {
            // A last page shorter than a page: copied from a full page of
            // its own, zero past the data.
            let mut last = vec![0u8; self.page];
            last[..src.len() - whole].copy_from_slice(&src[whole..]);
            // SAFETY: forwarded from the caller (rounded up to a page).
            unsafe { self.copy(dst.add(whole), last.as_ptr(), self.page)? };
        }
        Ok(())
    }

    /// `UFFDIO_COPY` of `len` bytes (a multiple of the page size), going
    /// on after pages that are present already (copied over normally).
    ///
    /// # Safety
    /// As [`fill`](Self::fill); `src` is readable for `len` bytes.
    unsafe fn copy(&self, dst: *mut u8, src: *const u8, len: usize) -> io::Result<()> {
        let mut done = 0usize;
        while done < len {
            let mut c = UffdioCopy {
                dst: dst as u64 + done as u64,
                src: src as u64 + done as u64,
                len: (len - done) as u64,
                mode: 0,
                copy: 0,
            };
            // SAFETY: the kernel copies from `src` into the registered
            // range at `dst` (both valid for the remaining length).
            let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_COPY, &mut c) };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if c.copy > 0 {
                done += c.copy as usize;
            }
            match e.raw_os_error() {
                // Present already: this one page the normal way.
                Some(libc::EEXIST) => {
                    // SAFETY: the page at `dst + done` is present (no
                    // fault) and the caller's alone; `src` as above.
                    unsafe {
                        std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), self.page)
                    };
                    done += self.page;
                }
                // The address space changed under the call: again.
                Some(libc::EAGAIN) => {}
                _ => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private anonymous mapping of `len` bytes, unmapped on drop.
    struct Anon(*mut u8, usize);

    impl Anon {
        fn new(len: usize) -> Anon {
            // SAFETY: a fresh mapping, checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Anon(p.cast(), len)
        }

        fn bytes(&self) -> &[u8] {
            // SAFETY: the live mapping.
            unsafe { std::slice::from_raw_parts(self.0, self.1) }
        }
    }

    impl Drop for Anon {
        fn drop(&mut self) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    #[test]
    fn filled_pages_hold_the_data_present_ones_are_overwritten_and_the_rest_reads_zero() {
        let ps = page_size();
        let map = Anon::new(8 * ps);
        let filler = Filler::register(map.0, 8 * ps - 100)
            .expect("userfaultfd (UFFD_USER_MODE_ONLY) is needed on this machine");
        let a: Vec<u8> = (0..2 * ps).map(|i| (i % 251) as u8 + 1).collect();
        let b: Vec<u8> = (0..ps).map(|i| (i % 13) as u8 + 7).collect();
        // SAFETY: page-aligned runs inside the range, this thread only.
        unsafe {
            filler.fill(map.0.add(ps), &a).unwrap();
            // Pages 2 and 3: page 2 is present (overwritten), 3 is not.
            filler
                .fill(map.0.add(2 * ps), &[b.clone(), b.clone()].concat())
                .unwrap();
            // The last page, shorter than a page.
            filler.fill(map.0.add(7 * ps), &b[..ps - 100]).unwrap();
        }
        drop(filler);
        let m = map.bytes();
        assert!(m[..ps].iter().all(|&x| x == 0), "page 0 never filled");
        assert_eq!(&m[ps..2 * ps], &a[..ps]);
        assert_eq!(&m[2 * ps..3 * ps], &b[..]);
        assert_eq!(&m[3 * ps..4 * ps], &b[..]);
        assert!(m[4 * ps..7 * ps].iter().all(|&x| x == 0));
        assert_eq!(&m[7 * ps..8 * ps - 100], &b[..ps - 100]);
        assert!(m[8 * ps - 100..].iter().all(|&x| x == 0));
    }

    #[test]
    fn an_unaligned_or_empty_range_is_refused() {
        let ps = page_size();
        let map = Anon::new(2 * ps);
        // SAFETY: an address inside our mapping, not dereferenced.
        assert!(Filler::register(unsafe { map.0.add(8) }, ps).is_none());
        assert!(Filler::register(map.0, 0).is_none());
    }
}
