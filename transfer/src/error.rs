//! Why a transfer did not succeed: [`Error`], one enum for the payload,
//! the send and the receive drivers.
//!
//! Each variant keeps the error it comes from as its
//! [source](std::error::Error::source) (a [`transit_multifd::Error`] names
//! the channel, the peer and the stage; an [`OpenError`] the channel and
//! the step) and says in its message what was being done; messages are
//! one line. Three kinds matter to a caller deciding what to tell its
//! user: [`Error::is_usage`] (the options asked for something this
//! endpoint or output cannot do: a command line's usage error),
//! [`Error::Cancelled`] (a signal on the [`Runtime`]) and the rest
//! (the transfer failed). Some messages name the `transit` command's
//! options (`--raw`, `--idle-timeout`), the fields of the options structs
//! that say the same.
//!
//! ```
//! use transit_transfer::Error;
//!
//! let e = Error::from(transit_channel::main_loop::runtime::PhaseError::Cancelled(15));
//! assert!(matches!(e, Error::Cancelled(15)));
//! assert!(!e.is_usage());
//! ```
//!
//! [`Runtime`]: transit_channel::main_loop::runtime::Runtime

use std::io;
use std::path::PathBuf;

use transit_channel::main_loop::runtime::PhaseError;
use transit_endpoint::OpenError;
use transit_multifd::copy::CopyError;
use transit_multifd::serve::AssembleError;
use transit_multifd::undo::UndoError;

use crate::send::EXEC_EXPECTS;

/// Why a transfer did not succeed; see the [module documentation](self).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An output path that cannot be written (a usage error).
    #[error("output {0}")]
    OutputPath(#[source] io::Error),
    /// A receiver was given a connected socket (`fd:N` of a connection)
    /// for a multifd session, which needs a listening one (a usage error).
    #[error("{uri} is a connected socket, but a multifd session needs a listening one; use --raw")]
    ConnectedSocket {
        /// The endpoint as given.
        uri: String,
    },
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

    /// Another process updates the file in place now: nothing was done.
    #[error("{}: nothing was {done}: {source}", .path.display())]
    UpdateInProgress {
        /// The file.
        path: PathBuf,
        /// `sent` or `received`.
        done: &'static str,
        /// The journal's refusal.
        source: UndoError,
    },
    /// An interrupted in-place update of the file cannot be rolled back:
    /// nothing was done.
    #[error("{}: an interrupted in-place update cannot be rolled back, so nothing was {done}: {source}", .path.display())]
    RollBack {
        /// The file.
        path: PathBuf,
        /// `sent` or `received`.
        done: &'static str,
        /// Why.
        source: UndoError,
    },

    /// Opening, accepting or listening on an endpoint failed (the message
    /// names the channel and the step).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A framed `exec:` failed before its session got going: the error
    /// (an [`OpenError`] or a [`transit_multifd::Error`]), and what the
    /// command must be ([`EXEC_EXPECTS`]).
    #[error("{source}; {EXEC_EXPECTS}")]
    ExecNotReceiver {
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The token that joins an `exec:` command's runs could not be made.
    #[error("a join token: {0}")]
    JoinToken(#[source] io::Error),
    /// A run of an `exec:` command ended badly after the session.
    #[error("after the session: {0}")]
    Commands(String),
    /// The multifd session failed.
    #[error(transparent)]
    Session(#[from] transit_multifd::Error),
    /// A listening receiver's session did not come together.
    #[error(transparent)]
    Assemble(#[from] AssembleError),

    /// A plain copy failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// A plain copy over a channel (its name) failed.
    #[error("raw channel ({channel}): {source}")]
    RawCopy {
        /// The channel's name.
        channel: String,
        /// The error.
        source: CopyError,
    },
    /// A plain send failed, and closing the channel said why (a command's
    /// exit status).
    #[error("raw channel: {source} ({copy})")]
    RawClosed {
        /// What closing the channel said.
        source: Box<transit_channel::Error>,
        /// The copy's own error.
        copy: CopyError,
    },
    /// The raw channel failed (opening, ending).
    #[error("raw channel: {0}")]
    RawChannel(#[source] transit_channel::Error),
    /// A raw receiver's first read failed.
    #[error("raw channel: receive: {0}")]
    RawReceive(#[source] transit_channel::Error),
    /// A plain send's receiver took nothing for the idle timeout.
    #[error(
        "raw channel ({channel}): the receiver took nothing for {seconds:.1} s (--idle-timeout)"
    )]
    SendIdle {
        /// The channel's name.
        channel: String,
        /// The idle timeout.
        seconds: f64,
    },
    /// A plain receive's peer sent nothing for the idle timeout.
    #[error("raw channel ({channel}): the peer sent nothing for {seconds:.1} s (--idle-timeout)")]
    RecvIdle {
        /// The channel's name.
        channel: String,
        /// The idle timeout.
        seconds: f64,
    },
    /// A plain send met a receiver speaking transit's framed protocol.
    #[error("the receiver speaks transit's framed protocol: drop --raw, or use it on both ends (it said: {})", one_line(.said.as_deref().unwrap_or("nothing")))]
    ReceiverFramed {
        /// What the receiver said.
        said: Option<String>,
    },
    /// A plain receive met a sender speaking transit's framed protocol
    /// (told so).
    #[error("the sender speaks transit's framed protocol: drop --raw, or use it on both ends{}", gave_up(.said.as_deref()))]
    SenderFramed {
        /// Why the sender gave up, if it said.
        said: Option<String>,
    },

    /// An output device or FIFO could not be opened.
    #[error("open {} for writing: {source}", .path.display())]
    OpenOutput {
        /// The output.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The output could not be opened (its message names it).
    #[error(transparent)]
    Output(io::Error),
    /// A complete file output could not be renamed into place.
    #[error("rename into {}: {source}", .path.display())]
    Rename {
        /// The output.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A received copy could not be put in place.
    #[error("put the output in place: {0}")]
    PutInPlace(#[source] io::Error),
    /// The received image file could not be read for its checksum.
    #[error("--checksum: read {}: {source}", .path.display())]
    ChecksumRead {
        /// The output.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },

    /// An input file (`file:`) could not be opened.
    #[error("open {}: {source}", .path.display())]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: transit_channel::Error,
    },
    /// This process' standard streams could not be taken as a channel.
    #[error("stdio: {0}")]
    Stdio(#[source] transit_channel::Error),
    /// The runs of a sender's `exec:` command could not be joined.
    #[error("{0}")]
    Join(String),
    /// This run of a sender's `exec:` command handed its channel over, and
    /// the session failed.
    #[error("exec: run {index}: the session failed (the run with the main channel says why)")]
    RunFailed {
        /// This run's index.
        index: u32,
    },
    /// Accepting a connection failed.
    #[error("accept on {listener}: {source}")]
    Accept {
        /// The listener's name.
        listener: String,
        /// The error.
        source: transit_channel::Error,
    },
    /// A raw receiver has no stream from what it was given.
    #[error("no raw stream from {0}")]
    NoRawStream(String),
    /// A connection's server layers (TLS, websocket) failed.
    #[error("connection from {peer}: {source}")]
    Layers {
        /// Who connected.
        peer: String,
        /// Why.
        source: OpenError,
    },
    /// No sender connected within the wait limit.
    #[error("no sender connected to {uri} within {seconds:.1} s")]
    NoSender {
        /// The endpoint as given.
        uri: String,
        /// The wait limit.
        seconds: f64,
    },
}

impl Error {
    /// The options asked for what the endpoint or the output cannot do (a
    /// command line's usage error, not a failure of the transfer).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::OutputPath(_) | Error::ConnectedSocket { .. })
    }
}

impl From<PhaseError> for Error {
    fn from(e: PhaseError) -> Error {
        match e {
            PhaseError::Cancelled(sig) => Error::Cancelled(sig),
            e => Error::Phase(e),
        }
    }
}

/// `e` with what a framed `exec:` command must be when `exec` (the usual
/// cause of a failure before the session got going is a command that is
/// not a transit receiver).
pub(crate) fn exec_hint<E>(e: E, exec: bool) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    Error: From<E>,
{
    if exec {
        Error::ExecNotReceiver {
            source: Box::new(e),
        }
    } else {
        Error::from(e)
    }
}

fn gave_up(said: Option<&str>) -> String {
    said.map(|r| format!(" (the sender gave up: {})", one_line(r)))
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use transit_endpoint::OpenFailure;

    #[test]
    fn a_hint_keeps_the_error_as_its_source() {
        let open = || OpenError::new("main channel: refused", OpenFailure::Other);
        let e = exec_hint(open(), true);
        assert_eq!(
            e.to_string(),
            format!("main channel: refused; {EXEC_EXPECTS}")
        );
        assert_eq!(e.source().and_then(|s| s.downcast_ref()), Some(&open()));
        assert!(matches!(exec_hint(open(), false), Error::Open(_)));
    }

    #[test]
    fn what_a_peer_said_is_one_line() {
        let e = Error::SenderFramed {
            said: Some("first\n  second\n".into()),
        };
        assert!(
            e.to_string()
                .ends_with(" (the sender gave up: first; second)"),
            "{e}"
        );
        let e = Error::ReceiverFramed { said: None };
        assert!(e.to_string().ends_with("(it said: nothing)"), "{e}");
    }

    #[test]
    fn usage_errors_are_told_apart() {
        let e = Error::OutputPath(io::Error::other("/x: not a file"));
        assert!(e.is_usage());
        assert_eq!(e.to_string(), "output /x: not a file");
        assert!(!Error::NoRawStream("Source::Channels".into()).is_usage());
    }
}
