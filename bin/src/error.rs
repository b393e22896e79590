//! How a command ends: success, a failure (exit 1), a usage error (exit 2)
//! or a cancellation by a signal (exit 130).

use std::fmt;
use std::sync::Arc;

/// Exit status of a successful run.
pub const EXIT_OK: i32 = 0;
/// Exit status of a failed run.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of a usage error (as clap's).
pub const EXIT_USAGE: i32 = 2;
/// Exit status after SIGINT or SIGTERM (128 + SIGINT, the shell's habit).
pub const EXIT_CANCELLED: i32 = 130;

/// Why a command did not succeed.
#[derive(Debug, Clone)]
pub enum AppError {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The transfer failed (exit 1); the message names the peer, the
    /// channel and the stage where they are known.
    Failed(String),
    /// A library's error ended the transfer (exit 1): the message people
    /// read (the error's own, with what the binary added), and the error
    /// itself, typed, as the [source](std::error::Error::source) (its own
    /// sources chained behind it).
    Error {
        /// What is printed.
        message: String,
        /// The error.
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A signal cancelled the run (exit 130).
    Cancelled(i32),
}

impl PartialEq for AppError {
    fn eq(&self, other: &AppError) -> bool {
        match (self, other) {
            (AppError::Usage(a), AppError::Usage(b))
            | (AppError::Failed(a), AppError::Failed(b)) => a == b,
            (AppError::Error { message: a, .. }, AppError::Error { message: b, .. }) => a == b,
            (AppError::Cancelled(a), AppError::Cancelled(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for AppError {}

impl AppError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Usage(_) => EXIT_USAGE,
            AppError::Failed(_) | AppError::Error { .. } => EXIT_FAILURE,
            AppError::Cancelled(_) => EXIT_CANCELLED,
        }
    }

    /// A failure from anything printable.
    pub fn failed(msg: impl fmt::Display) -> AppError {
        AppError::Failed(msg.to_string())
    }

    /// A library's error, kept as the source.
    pub fn from_error(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
        AppError::Error {
            message: e.to_string(),
            source: Arc::new(e),
        }
    }

    /// A library's error, kept as the source, printed as `message` (which
    /// says what was being done, and the error).
    pub fn context(message: String, e: impl std::error::Error + Send + Sync + 'static) -> AppError {
        AppError::Error {
            message,
            source: Arc::new(e),
        }
    }

    /// The same error with `more` after its message (the source kept).
    pub fn with_note(self, more: &str) -> AppError {
        match self {
            AppError::Failed(m) => AppError::Failed(format!("{m}; {more}")),
            AppError::Error { message, source } => AppError::Error {
                message: format!("{message}; {more}"),
                source,
            },
            e => e,
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Usage(m) | AppError::Failed(m) | AppError::Error { message: m, .. } => {
                f.write_str(&one_line(m))
            }
            AppError::Cancelled(sig) => write!(f, "cancelled by {}", signal_name(*sig)),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Error { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl From<transit_channel::main_loop::runtime::PhaseError> for AppError {
    fn from(e: transit_channel::main_loop::runtime::PhaseError) -> AppError {
        use transit_channel::main_loop::runtime::PhaseError;
        match e {
            PhaseError::Cancelled(sig) => AppError::Cancelled(sig),
            PhaseError::Failed(m) => AppError::Failed(m),
        }
    }
}

/// A run's error: a usage refusal (exit 2), a cancellation (130), else a
/// failure keeping the error as its source (exit 1).
impl From<transit_transfer::Error> for AppError {
    fn from(e: transit_transfer::Error) -> AppError {
        match e {
            transit_transfer::Error::Cancelled(sig) => AppError::Cancelled(sig),
            e if e.is_usage() => AppError::Usage(e.to_string()),
            e => AppError::from_error(e),
        }
    }
}

impl From<transit_multifd::Error> for AppError {
    fn from(e: transit_multifd::Error) -> AppError {
        AppError::from_error(e)
    }
}

impl From<transit_multifd::copy::CopyError> for AppError {
    fn from(e: transit_multifd::copy::CopyError) -> AppError {
        AppError::from_error(e)
    }
}

/// Collapse a message to one line (errors are printed as one line).
pub use transit_transfer::one_line;

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
    fn a_librarys_error_is_kept_as_the_source() {
        use std::error::Error as _;
        let lib = transit_multifd::Error::Config("no destination".into());
        let e = AppError::from(lib).with_note("try again");
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().ends_with("; try again"), "{e}");
        let src = e.source().expect("the library error");
        assert!(src.downcast_ref::<transit_multifd::Error>().is_some());
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
