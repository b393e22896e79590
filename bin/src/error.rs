//! How a command ends: success, a failure (exit 1), a usage error (exit 2)
//! or a cancellation by a signal (exit 130).

use std::fmt;

/// Exit status of a successful run.
pub const EXIT_OK: i32 = 0;
/// Exit status of a failed run.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of a usage error (as clap's).
pub const EXIT_USAGE: i32 = 2;
/// Exit status after SIGINT or SIGTERM (128 + SIGINT, the shell's habit).
pub const EXIT_CANCELLED: i32 = 130;

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppError {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The transfer failed (exit 1); the message names the peer, the
    /// channel and the stage where they are known.
    Failed(String),
    /// A signal cancelled the run (exit 130).
    Cancelled(i32),
}

impl AppError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Usage(_) => EXIT_USAGE,
            AppError::Failed(_) => EXIT_FAILURE,
            AppError::Cancelled(_) => EXIT_CANCELLED,
        }
    }

    /// A failure from anything printable.
    pub fn failed(msg: impl fmt::Display) -> AppError {
        AppError::Failed(msg.to_string())
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Usage(m) | AppError::Failed(m) => f.write_str(&one_line(m)),
            AppError::Cancelled(sig) => write!(f, "cancelled by {}", signal_name(*sig)),
        }
    }
}

impl std::error::Error for AppError {}

impl From<transit_multifd::Error> for AppError {
    fn from(e: transit_multifd::Error) -> AppError {
        AppError::Failed(e.to_string())
    }
}

impl From<transit_multifd::copy::CopyError> for AppError {
    fn from(e: transit_multifd::copy::CopyError) -> AppError {
        AppError::Failed(e.to_string())
    }
}

/// Collapse a message to one line (errors are printed as one line).
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    out
}

/// `SIGINT`, `SIGTERM` or `signal N`.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_convention() {
        assert_eq!(AppError::Usage("x".into()).exit_code(), 2);
        assert_eq!(AppError::Failed("x".into()).exit_code(), 1);
        assert_eq!(AppError::Cancelled(libc::SIGTERM).exit_code(), 130);
    }

    #[test]
    fn messages_are_one_line() {
        let e = AppError::Failed("first\n  second\n\nthird".into());
        assert_eq!(e.to_string(), "first; second; third");
        assert_eq!(
            AppError::Cancelled(libc::SIGINT).to_string(),
            "cancelled by SIGINT"
        );
    }
}
