//! MSG_ZEROCOPY bookkeeping: enabling it and reaping completions.
//!
//! Every successful `sendmsg(MSG_ZEROCOPY)` gets a 32-bit id from the kernel
//! (0, 1, 2, ... per socket). When the kernel no longer needs the pages it
//! queues a notification on the socket's error queue covering a range of ids
//! `[ee_info, ee_data]`; `ee_code` has `SO_EE_CODE_ZEROCOPY_COPIED` set when
//! it fell back to copying (always the case over loopback, where the receive
//! side needs its own copy). [`ZeroCopyState::drain`] reads the error queue
//! until every queued send is acknowledged, waiting for `POLLERR` in between.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::ptr;

use crate::channel::FlushOutcome;
use crate::error::{Error, Result};

/// `SO_ZEROCOPY` (asm-generic/socket.h).
const SO_ZEROCOPY: libc::c_int = 60;
/// `SO_EE_ORIGIN_ZEROCOPY` (linux/errqueue.h).
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `SO_EE_CODE_ZEROCOPY_COPIED` (linux/errqueue.h).
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// Room for one `sock_extended_err` plus the offender address.
const ERRQ_PAYLOAD: usize =
    mem::size_of::<libc::sock_extended_err>() + mem::size_of::<libc::sockaddr_in6>();
// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const ERRQ_BUF_LEN: usize = unsafe { libc::CMSG_SPACE(ERRQ_PAYLOAD as libc::c_uint) } as usize;

#[repr(C, align(8))]
struct ErrqBuf([u8; ERRQ_BUF_LEN]);

/// Turn on `SO_ZEROCOPY` for `fd`.
pub(super) fn enable(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&one`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ZEROCOPY,
            ptr::addr_of!(one).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Counters of zero-copy sends on one socket.
#[derive(Debug, Default)]
pub(super) struct ZeroCopyState {
    /// Zero-copy sends the kernel accepted (each consumed one id).
    queued: u64,
    /// Sends acknowledged through the error queue.
    acked: u64,
    /// `queued` at the last user-visible flush.
    queued_at_flush: u64,
    /// Some send since the last flush really avoided the copy.
    avoided_copy: bool,
}

impl ZeroCopyState {
    /// Count one accepted zero-copy `sendmsg`.
    pub(super) fn note_queued(&mut self) {
        self.queued += 1;
    }

    /// Sends not yet acknowledged.
    pub(super) fn pending(&self) -> u64 {
        self.queued - self.acked
    }

    /// Read completions until every queued send is acknowledged. Blocks
    /// (in `poll`) whatever the channel's mode: the kernel needs the peer to
    /// acknowledge the data first.
    pub(super) fn drain(&mut self, fd: RawFd, name: &str) -> Result<()> {
        let mut after_wait = false;
        while self.pending() > 0 {
            if self.read_one(fd, name)? {
                after_wait = false;
                continue;
            }
            if after_wait {
                // POLLERR without a queued completion: a socket error.
                if let Some(err) = take_socket_error(fd) {
                    return Err(Error::os(
                        name,
                        format!("wait for {} zero-copy completion(s)", self.pending()),
                        err,
                    ));
                }
            }
            wait_err(fd, name, self.pending())?;
            after_wait = true;
        }
        Ok(())
    }

    /// What happened since the last call; resets the per-flush state.
    /// Call after [`ZeroCopyState::drain`].
    pub(super) fn take_outcome(&mut self) -> FlushOutcome {
        let sent = self.queued - self.queued_at_flush;
        let outcome = match (sent, self.avoided_copy) {
            (0, _) => FlushOutcome::Nothing,
            (_, true) => FlushOutcome::ZeroCopy,
            (_, false) => FlushOutcome::Copied,
        };
        self.queued_at_flush = self.queued;
        self.avoided_copy = false;
        outcome
    }

    /// Read one error-queue message. `Ok(false)` if the queue is empty.
    fn read_one(&mut self, fd: RawFd, name: &str) -> Result<bool> {
        let mut cbuf = ErrqBuf([0; ERRQ_BUF_LEN]);
        // SAFETY: an all-zero msghdr is a valid "no name, no iov".
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = ERRQ_BUF_LEN as _;
        loop {
            // SAFETY: `msg` points at `cbuf`, which outlives the call; no
            // iovecs are given.
            let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
            if r >= 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(false),
                _ => return Err(Error::os(name, "read the zero-copy completion queue", err)),
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(Error::protocol(
                name,
                "zero-copy completion truncated (control buffer too small)",
            ));
        }
        // SAFETY: the kernel filled `msg`; CMSG_FIRSTHDR stays within
        // `msg_controllen` bytes of `cbuf`.
        let hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        if hdr.is_null() {
            return Err(Error::protocol(
                name,
                "zero-copy completion queue returned a message without control data",
            ));
        }
        // SAFETY: non-null CMSG_FIRSTHDR points at a whole cmsghdr in `cbuf`.
        let h = unsafe { ptr::read_unaligned(hdr) };
        let is_recverr = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
            || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
        // SAFETY: CMSG_LEN is arithmetic only.
        let need = unsafe { libc::CMSG_LEN(mem::size_of::<libc::sock_extended_err>() as _) };
        if !is_recverr || (h.cmsg_len as usize) < need as usize {
            return Err(Error::protocol(
                name,
                format!(
                    "unexpected message on the error queue (level {}, type {}, {} bytes) \
                     while waiting for zero-copy completions",
                    h.cmsg_level, h.cmsg_type, h.cmsg_len
                ),
            ));
        }
        // SAFETY: cmsg_len covers a whole sock_extended_err after the header
        // (checked above); it may be unaligned, hence read_unaligned.
        let ee =
            unsafe { ptr::read_unaligned(libc::CMSG_DATA(hdr).cast::<libc::sock_extended_err>()) };
        if ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY || ee.ee_errno != 0 {
            return Err(Error::protocol(
                name,
                format!(
                    "error queue: expected a zero-copy completion, got origin {} errno {} ({})",
                    ee.ee_origin,
                    ee.ee_errno,
                    io::Error::from_raw_os_error(ee.ee_errno as i32)
                ),
            ));
        }
        let (lo, hi) = (ee.ee_info, ee.ee_data);
        let count = u64::from(hi.wrapping_sub(lo)) + 1;
        // Ids are the low 32 bits of the running count of queued sends.
        let first_pending = self.acked as u32;
        let in_window = u64::from(lo.wrapping_sub(first_pending)) < self.pending();
        if count > self.pending() || !in_window {
            return Err(Error::protocol(
                name,
                format!(
                    "zero-copy completion for sends {lo}..={hi} does not match the {} pending \
                     (ids {first_pending}..)",
                    self.pending()
                ),
            ));
        }
        self.acked += count;
        if ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED == 0 {
            self.avoided_copy = true;
        }
        Ok(true)
    }
}

/// Read and clear `SO_ERROR`.
fn take_socket_error(fd: RawFd) -> Option<io::Error> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `err`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            ptr::addr_of_mut!(err).cast(),
            &mut len,
        )
    };
    match (r, err) {
        (r, _) if r < 0 => Some(io::Error::last_os_error()),
        (_, 0) => None,
        (_, e) => Some(io::Error::from_raw_os_error(e)),
    }
}

/// Wait until the error queue has something (POLLERR).
fn wait_err(fd: RawFd, name: &str, pending: u64) -> Result<()> {
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::os(name, "wait for zero-copy completions", err));
        }
        if pfd.revents & libc::POLLERR != 0 {
            return Ok(());
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Err(Error::protocol(
                name,
                format!(
                    "connection shut down while {pending} zero-copy send(s) were unacknowledged"
                ),
            ));
        }
    }
}
