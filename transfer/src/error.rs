//! Why a transfer did not succeed: [`Error`], one enum for the payload
//! and the drivers.
//!
//! Each variant keeps the error it comes from as its
//! [source](std::error::Error::source) and says in its message what was
//! being done; messages are one line. A signal on the
//! [`Runtime`] ends a run with [`Error::Cancelled`].
//!
//! ```
//! use transit_transfer::Error;
//!
//! let e = Error::from(transit_channel::main_loop::runtime::PhaseError::Cancelled(15));
//! assert!(matches!(e, Error::Cancelled(15)));
//! ```
//!
//! [`Runtime`]: transit_channel::main_loop::runtime::Runtime

use std::io;
use std::path::PathBuf;

use transit_channel::main_loop::runtime::PhaseError;

/// Why a transfer did not succeed; see the [module documentation](self).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signal (its number) cancelled the run.
    #[error("cancelled by signal {0}")]
    Cancelled(i32),
    /// The main loop's run of a phase failed.
    #[error(transparent)]
    Phase(PhaseError),

    /// Generating an image failed.
    #[error("generate a {size}-byte image: {source}")]
    Generate {
        /// The image size asked for.
        size: u64,
        /// The error.
        source: io::Error,
    },
    /// Standard input could not be taken as the input.
    #[error("stdin: {0}")]
    Stdin(#[source] io::Error),
    /// The input file could not be opened or examined.
    #[error("input {}: {source}", .path.display())]
    Input {
        /// The input.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The input file could not be mapped as an image.
    #[error("map input {}: {source}", .path.display())]
    MapInput {
        /// The input.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The input is a directory.
    #[error("input {}: is a directory", .path.display())]
    InputIsDirectory {
        /// The input.
        path: PathBuf,
    },
}

impl From<PhaseError> for Error {
    fn from(e: PhaseError) -> Error {
        match e {
            PhaseError::Cancelled(sig) => Error::Cancelled(sig),
            e => Error::Phase(e),
        }
    }
}

/// A message on one line: its lines trimmed, the empty ones dropped, the
/// others joined with `; ` (errors are printed as one line).
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
