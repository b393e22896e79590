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
//! - [`error`]: [`Error`], typed.
//!
//! Dependencies run one way: this crate uses `transit-channel`,
//! `transit-endpoint` and `transit-multifd`; none of them uses it.

pub mod error;
pub mod payload;

pub use error::{one_line, Error};
pub use payload::Input;
