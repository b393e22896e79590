//! Raw vectored `recvmsg`/`sendmsg` with SCM_RIGHTS file descriptor passing.
//!
//! The iovecs handed to the kernel are the caller's buffers themselves
//! (`IoSlice`/`IoSliceMut` are ABI compatible with `struct iovec` on Unix),
//! so nothing is copied in user space. The control buffer lives on the
//! stack; a read allocates only when fds actually arrive (to hand them back).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::channel::ReadFlags;
use crate::error::{Error, Result};

/// Most file descriptors carried by one message (QEMU's `SOCKET_MAX_FDS`).
pub const MAX_FDS: usize = 16;

const FD_BYTES: usize = MAX_FDS * mem::size_of::<RawFd>();

// SAFETY: CMSG_SPACE is pure arithmetic on its argument; it reads no memory.
const CMSG_BUF_LEN: usize = unsafe { libc::CMSG_SPACE(FD_BYTES as libc::c_uint) } as usize;

/// A control-message buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_LEN]);

/// Receive into `bufs`; with `fds_out`, accept up to [`MAX_FDS`] fds.
///
/// Received fds are close-on-exec (MSG_CMSG_CLOEXEC) and made blocking
/// unless `FD_PRESERVE_BLOCKING`. On any error every received fd is closed
/// and nothing is appended to `fds_out`. EINTR is retried; EAGAIN becomes
/// [`Error::WouldBlock`].
pub(super) fn recv(
    fd: RawFd,
    name: &str,
    bufs: &mut [IoSliceMut<'_>],
    fds_out: Option<&mut Vec<OwnedFd>>,
    flags: ReadFlags,
) -> Result<usize> {
    let mut cmsg = CmsgBuf([0; CMSG_BUF_LEN]);
    // SAFETY: an all-zero msghdr is a valid "no name, no iov, no control".
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = bufs.as_mut_ptr().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len() as _;
    if fds_out.is_some() {
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = CMSG_BUF_LEN as _;
    }
    let mut rflags = libc::MSG_CMSG_CLOEXEC;
    if flags.contains(ReadFlags::MSG_PEEK) {
        rflags |= libc::MSG_PEEK;
    }
    let n = loop {
        // SAFETY: `msg` points at `bufs` (IoSliceMut is ABI compatible with
        // iovec, each valid for writes of its length) and at `cmsg`, both of
        // which outlive the call; the lengths given match the allocations.
        let n = unsafe { libc::recvmsg(fd, &mut msg, rflags) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::os(name, "recvmsg", err));
        }
    };
    let Some(out) = fds_out else {
        return Ok(n);
    };
    // Take ownership of every fd first so that any early return closes them.
    let mut got: [Option<OwnedFd>; MAX_FDS] = Default::default();
    let mut count = 0;
    let mut overflow = false;
    // SAFETY: `msg` was filled by the kernel; the CMSG_* macros walk the
    // control buffer within `msg_controllen`, which the kernel set to the
    // bytes it wrote (at most CMSG_BUF_LEN).
    let mut hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !hdr.is_null() {
        // SAFETY: CMSG_FIRSTHDR/NXTHDR return either null or a pointer to a
        // complete cmsghdr inside the control buffer.
        let h = unsafe { ptr::read_unaligned(hdr) };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is arithmetic only.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let nfds = (h.cmsg_len as usize).saturating_sub(header) / mem::size_of::<RawFd>();
            // SAFETY: CMSG_DATA points at the payload of this cmsghdr, which
            // holds `nfds` ints (cmsg_len covers them, and the kernel never
            // reports more than it wrote into our buffer).
            let data = unsafe { libc::CMSG_DATA(hdr) }.cast::<RawFd>();
            for i in 0..nfds {
                // SAFETY: `i < nfds`, inside the payload (see above); the
                // payload may be unaligned, hence read_unaligned.
                let raw = unsafe { ptr::read_unaligned(data.add(i)) };
                // SAFETY: the kernel just installed `raw` in our fd table for
                // us alone; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if count < MAX_FDS {
                    got[count] = Some(owned);
                    count += 1;
                } else {
                    overflow = true; // `owned` drops here: closed
                }
            }
        }
        // SAFETY: `hdr` is a header inside `msg`'s control buffer.
        hdr = unsafe { libc::CMSG_NXTHDR(&msg, hdr) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || overflow {
        return Err(Error::protocol(
            name,
            format!(
                "recvmsg: control data truncated: the peer sent more than {MAX_FDS} file \
                 descriptors in one message; the {count} that arrived were closed"
            ),
        ));
    }
    if !flags.contains(ReadFlags::FD_PRESERVE_BLOCKING) {
        for f in got.iter().flatten() {
            set_nonblocking(f.as_raw_fd(), false)
                .map_err(|e| Error::os(name, "make a received file descriptor blocking", e))?;
        }
    }
    out.extend(got.into_iter().flatten());
    Ok(n)
}

/// Send `bufs` with `fds` (SCM_RIGHTS) attached to the first byte, with
/// MSG_NOSIGNAL, and MSG_ZEROCOPY when `zero_copy`. EINTR is retried; other
/// errors are returned raw so the caller can react to ENOBUFS.
pub(super) fn send(
    fd: RawFd,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    zero_copy: bool,
) -> io::Result<usize> {
    debug_assert!(fds.len() <= MAX_FDS);
    let mut cmsg = CmsgBuf([0; CMSG_BUF_LEN]);
    // SAFETY: an all-zero msghdr is a valid "no name, no iov, no control".
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // sendmsg never writes through msg_iov; the cast to *mut is what the C
    // signature wants.
    msg.msg_iov = bufs.as_ptr().cast::<libc::iovec>().cast_mut();
    msg.msg_iovlen = bufs.len() as _;
    if !fds.is_empty() {
        let payload = mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE is arithmetic only.
        let space = unsafe { libc::CMSG_SPACE(payload as libc::c_uint) } as usize;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(16 fds) >= `space`
        // bytes, so CMSG_FIRSTHDR is non-null and the header plus `payload`
        // bytes of data fit; writes are unaligned-safe.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            ptr::write_unaligned(
                hdr,
                libc::cmsghdr {
                    cmsg_len: libc::CMSG_LEN(payload as libc::c_uint) as _,
                    cmsg_level: libc::SOL_SOCKET,
                    cmsg_type: libc::SCM_RIGHTS,
                },
            );
            let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
            for (i, f) in fds.iter().enumerate() {
                ptr::write_unaligned(data.add(i), f.as_raw_fd());
            }
        }
    }
    let mut sflags = libc::MSG_NOSIGNAL;
    if zero_copy {
        sflags |= libc::MSG_ZEROCOPY;
    }
    loop {
        // SAFETY: `msg` points at `bufs` (IoSlice is ABI compatible with
        // iovec, each valid for reads of its length) and at `cmsg`; both
        // outlive the call.
        let n = unsafe { libc::sendmsg(fd, &msg, sflags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Set or clear O_NONBLOCK on `fd`.
pub(super) fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL on an fd we hold reads only its flags.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if nonblocking {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    if new != fl {
        // SAFETY: F_SETFL with status flags on an fd we hold.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True if O_NONBLOCK is set on `fd`.
pub(super) fn is_nonblocking(fd: RawFd) -> io::Result<bool> {
    // SAFETY: F_GETFL on an fd we hold reads only its flags.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl & libc::O_NONBLOCK != 0)
}
