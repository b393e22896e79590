//! transit endpoints: from a URI a person typed to a session's channels,
//! connected and layered.
//!
//! - [`uri`]: the grammar: `tcp:`, `unix:`, `unix-abstract:`, `vsock:`,
//!   `fd:`, `exec:`, `stdio:`, `file:`, `ws://`, `wss://`, `rdma:`
//!   ([`Endpoint`]).
//! - [`connect`]: open channel *i* of a session: the base channel (a
//!   socket connect with retries while nobody listens, a command, an RDMA
//!   queue pair), then TLS, then the websocket upgrade, every handshake
//!   under [`TransportOpts::timeout`] and cancellable ([`Cancel`]); the
//!   server layers of one accepted connection ([`connect::wrap_accepted`]).
//! - [`accept`]: where a receiver's connections come from ([`accept::listen`]
//!   opens an endpoint for receiving), and an [`accept::Acceptor`] that
//!   hands over every connection layered, its first bytes read: one
//!   abstraction for a listener's sockets, an RDMA listener and the joined
//!   runs of `exec:`.
//! - [`admit`]: a listener's connections taken through TLS, the websocket
//!   upgrade and their first bytes on a main loop, without a thread each,
//!   every connection under its own deadline ([`admit::Admission`]).
//! - [`exec`]: `exec:COMMAND` channels whose drop never blocks.
//! - [`join`]: the N+1 runs of an `exec:` command joined into one session
//!   at the far end (`transit recv stdio:`).
//!
//! The crate knows channels, not sessions: what a connection's first bytes
//! mean is the caller's decider (`transit_multifd::incoming::head` for a
//! multifd receiver). Dependencies run one way: this crate uses
//! `transit-channel`; `transit-multifd` does not use this crate; the
//! `transit` binary uses both.
//!
//! ```no_run
//! use std::time::Duration;
//! use transit_endpoint::{connect, Endpoint, TransportOpts};
//!
//! // A session of 4 page channels to a websocket endpoint: the main
//! // channel (0) and channels 1..=4, each connected and upgraded.
//! let ep = Endpoint::parse("ws://127.0.0.1:8080/migrate")?;
//! let opts = TransportOpts::new(Duration::from_secs(10));
//! let chans = (0..5u32)
//!     .map(|i| connect::open(&ep, &opts, i, 5, &format!("channel {i}")))
//!     .collect::<Result<Vec<_>, _>>()?;
//! # drop(chans);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod accept;
pub mod admit;
pub mod connect;
pub mod exec;
pub mod join;
pub mod uri;

pub use connect::{Cancel, OpenError, OpenFailure, TlsOpts, TransportOpts};
pub use uri::Endpoint;
