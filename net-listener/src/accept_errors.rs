//! What to do about a failed `accept`, and how to tell someone without
//! flooding stderr.

use std::time::{Duration, Instant};

use transit_channel::Error;

/// How long an armed watch stays off after an accept error that would repeat
/// at once (EMFILE and friends), so the loop does not spin on a pending
/// connection it cannot take.
pub(crate) const REARM_DELAY: Duration = Duration::from_millis(100);

/// The shortest gap between two log lines about the same kind of error.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What the accept loop does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The connection went away or the call was interrupted: try the next
    /// one at once.
    Retry,
    /// Out of fds or memory, or the listening socket is in a state where the
    /// same call fails again immediately: stop accepting for a while.
    Backoff,
}

/// Classify an accept error.
pub(crate) fn verdict(e: &Error) -> Verdict {
    match e.raw_os_error() {
        Some(
            libc::ECONNABORTED
            | libc::EINTR
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT,
        ) => Verdict::Retry,
        _ => Verdict::Backoff,
    }
}

/// Counts accept errors and logs each kind at most once per second.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    total: u64,
    /// (errno or -1, last time logged, suppressed since then)
    last_logged: Vec<(i32, Instant, u64)>,
}

impl AcceptErrors {
    /// Errors seen since the listener was made.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Count `e` and log it unless the same kind was logged less than a
    /// second ago.
    pub(crate) fn note(&mut self, e: &Error) {
        self.total += 1;
        let kind = e.raw_os_error().unwrap_or(-1);
        let now = Instant::now();
        match self.last_logged.iter_mut().find(|(k, _, _)| *k == kind) {
            Some((_, at, suppressed)) if now.duration_since(*at) < LOG_INTERVAL => {
                *suppressed += 1;
            }
            Some((_, at, suppressed)) => {
                let n = std::mem::take(suppressed);
                *at = now;
                log(e, n);
            }
            None => {
                self.last_logged.push((kind, now, 0));
                log(e, 0);
            }
        }
    }
}

fn log(e: &Error, suppressed: u64) {
    if suppressed > 0 {
        eprintln!("{e} (listener kept; {suppressed} more like it since the last report)");
    } else {
        eprintln!("{e} (listener kept)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn os(errno: i32) -> Error {
        Error::os("l", "accept", io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn fd_exhaustion_backs_off_and_aborted_connections_retry() {
        assert_eq!(verdict(&os(libc::EMFILE)), Verdict::Backoff);
        assert_eq!(verdict(&os(libc::ENFILE)), Verdict::Backoff);
        assert_eq!(verdict(&os(libc::ENOBUFS)), Verdict::Backoff);
        assert_eq!(verdict(&os(libc::ECONNABORTED)), Verdict::Retry);
        assert_eq!(verdict(&os(libc::EINTR)), Verdict::Retry);
        assert_eq!(verdict(&os(libc::EPROTO)), Verdict::Retry);
    }

    #[test]
    fn every_error_is_counted_even_when_not_logged() {
        let mut errs = AcceptErrors::default();
        for _ in 0..5 {
            errs.note(&os(libc::EMFILE));
        }
        errs.note(&os(libc::ECONNABORTED));
        assert_eq!(errs.total(), 6);
        let emfile = errs.last_logged.iter().find(|(k, _, _)| *k == libc::EMFILE);
        assert_eq!(emfile.map(|e| e.2), Some(4), "four EMFILE lines suppressed");
    }
}
