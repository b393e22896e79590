//! Wait for any of several listening sockets to become readable.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Poll `fds` for input until one is ready or `deadline` passes; `EINTR`
/// is retried with the time left. Returns the indexes (into `fds`) that are
/// readable or in error; empty on timeout.
pub(crate) fn wait_readable(fds: &[RawFd], deadline: Option<Instant>) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond remainder still sleeps.
                let ms = left.as_micros().div_ceil(1000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `pfds` is a valid, initialised array of `pfds.len()`
        // pollfd structs that lives across the call; poll only writes the
        // `revents` fields.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
            continue;
        }
        return Ok(pfds
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i)
            .collect());
    }
}

/// `now + timeout`; a timeout too large to represent waits forever.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn times_out_with_nothing_ready_and_reports_the_ready_index() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        let (c, _d) = UnixDatagram::pair().expect("socketpair");
        let fds = [a.as_raw_fd(), c.as_raw_fd()];
        let none = wait_readable(&fds, deadline_after(Some(Duration::from_millis(20))));
        assert_eq!(none.expect("poll"), Vec::<usize>::new());
        b.send(b"x").expect("send");
        let ready = wait_readable(&fds, deadline_after(Some(Duration::from_secs(10))));
        assert_eq!(ready.expect("poll"), vec![0]);
    }
}
