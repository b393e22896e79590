//! transit transfers: a whole `send` or `receive` run as a library call.
//!
//! [`transit_endpoint`] turns a URI into a session's layered channels and
//! [`transit_multifd`] runs a session over them; this crate joins the two
//! into the runs the `transit` binary offers (a payload to an endpoint, an
//! endpoint into an output), returning what happened as data, so that a
//! program embedding transit gets the command's behaviour without its
//! terminal. The binary keeps argument parsing, terminals and rendering.
//!
//! - [`payload`]: what a send sends ([`Input`]: a generated or mapped
//!   image, or a stream).
//! - [`send`]: [`send::send`] an [`Input`] to an endpoint as a multifd
//!   session (parallel channels, passes, reconnects, `exec:` commands), a
//!   plain copy (`raw`) or into a file (`file:`), per [`SendOptions`].
//! - [`receive`]: [`receive::receive`] from an endpoint (listen, assemble
//!   the session, refuse strangers, put the output in place; or take one
//!   plain stream), per [`ReceiveOptions`].
//! - [`observe`]: the live counters ([`Watch`]) and hooks ([`Observer`])
//!   a progress display needs.
//! - [`error`]: [`Error`], typed, telling usage refusals and
//!   cancellations from failures.
//! - [`report`]: a run's summary as data (the `--json` objects, whose
//!   schema `docs/cli.md` documents, and the human line), and this
//!   process's CPU time and peak memory.
//! - [`units`]: how sizes, rates and seconds read for people (`1.00 GiB`,
//!   `440 MiB/s`, `0.710 s`), the one convention of every human output.
//! - `bench` (feature `bench`): the loopback benchmark `transit bench`
//!   runs, its rows as data. The feature turns on transit-channel's
//!   `testing` (throw-away TLS credentials, rcgen); the default build has
//!   neither.
//!
//! Both drivers run their phases on a
//! [`Runtime`](transit_channel::main_loop::runtime::Runtime): blocking
//! work on worker threads, the loop's thread free for timers, and a
//! signal (SIGINT, SIGTERM) cancelling the phase that runs (channels shut
//! down, the session aborted, the peer told, no output left behind):
//! [`Error::Cancelled`]. What a run did comes back as an [`Outcome`].
//!
//! Dependencies run one way: this crate uses `transit-channel`,
//! `transit-endpoint` and `transit-multifd`; none of them uses it.
//!
//! # Features and limits
//!
//! * `bench`: the `bench` module (off by default).
//! * `rdma`: RDMA endpoints (rdma-core headers and libclang to build).
//!
//! The CPU time and peak memory of a report are the whole process's (see
//! [`report`]); a program running several transfers at once sees their
//! sum in each.
//!
//! ```
//! use transit_transfer::units;
//!
//! assert_eq!(units::size(3 << 19), "1.50 MiB");
//! assert_eq!(units::rate(2_000_000.0), "1.91 MiB/s");
//! ```
//!
//! ```no_run
//! use transit_channel::main_loop::runtime::Runtime;
//! use transit_endpoint::Endpoint;
//! use transit_transfer::{payload, send, SendOptions};
//!
//! let rt = Runtime::new()?;
//! let opts = SendOptions::new(Endpoint::parse("tcp:127.0.0.1:4444")?);
//! let input = payload::open("vm.img".as_ref(), true)?;
//! let done = send::send(&rt, &opts, input, &mut ())?;
//! println!("{} bytes to {:?}", done.stats.bytes, done.peer);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "bench")]
pub mod bench;
pub mod error;
pub mod observe;
pub mod payload;
pub mod receive;
pub mod report;
pub mod send;
pub mod units;

pub use error::{one_line, Error};
pub use observe::{Observer, Watch};
pub use payload::Input;
pub use receive::ReceiveOptions;
pub use send::SendOptions;

use transit_multifd::Stats;

/// How the data of a run travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A multifd session of an image (pages, in any order).
    Image,
    /// A multifd session of a stream (chunks, in order).
    Stream,
    /// A plain copy: one channel of bytes, no framing.
    Raw,
}

impl Mode {
    /// `image`, `stream` or `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Image => "image",
            Mode::Stream => "stream",
            Mode::Raw => "raw",
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The figures (a plain copy has one channel and no pages).
    pub stats: Stats,
    /// Who the peer was (a socket's address, a channel's name, the
    /// `file:`), when there was one.
    pub peer: Option<String>,
    /// How the data travelled.
    pub mode: Mode,
    /// Passes over the image (1 for a stream or a copy).
    pub passes: u32,
    /// The image's page size (0 for a stream or a copy).
    pub page_size: u32,
    /// The image's size; a stream's or a copy's length.
    pub image_bytes: u64,
    /// The end-to-end digest was compared (a session with verification
    /// on).
    pub verified: bool,
    /// SHA-256 of the payload, when asked for.
    pub sha256: Option<String>,
    /// The receiver updated its output file in place.
    pub in_place: bool,
    /// The receiver's session announced compressed packets.
    pub compressed: bool,
}

impl Outcome {
    /// The outcome of a plain copy of `stats.bytes` bytes.
    fn copy(stats: Stats, peer: Option<String>, sha256: Option<String>) -> Outcome {
        Outcome {
            peer,
            mode: Mode::Raw,
            passes: 1,
            page_size: 0,
            image_bytes: stats.bytes,
            verified: false,
            sha256,
            in_place: false,
            compressed: false,
            stats,
        }
    }
}
