//! transit transfers: a whole `send` or `receive` run as a library call.
//!
//! [`transit_endpoint`] turns a URI into a session's layered channels and
//! [`transit_multifd`] runs a session over them; this crate joins the two
//! into the runs the `transit` binary offers (a payload to an endpoint, an
//! endpoint into an output), returning what happened as data, so that a
//! program embedding transit gets the command's behaviour without its
//! terminal. The binary keeps argument parsing, terminals and rendering.
//!
//! Dependencies run one way: this crate uses `transit-channel`,
//! `transit-endpoint` and `transit-multifd`; none of them uses it.
//!
//! # Modules
//!
//! * [`units`]: how sizes, rates and seconds read for people (`1.00 GiB`,
//!   `440 MiB/s`, `0.710 s`), the one convention of every human output.
//! * [`report`]: a run's summary as data (the `--json` objects, whose
//!   schema `docs/cli.md` documents, and the human line), and this
//!   process's CPU time and peak memory.
//! * `bench` (feature `bench`): the loopback benchmark `transit bench`
//!   runs, its rows as data. The feature turns on transit-channel's
//!   `testing` (throw-away TLS credentials, rcgen); the default build has
//!   neither.

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

#[cfg(feature = "bench")]
pub mod bench;
pub mod report;
pub mod units;
