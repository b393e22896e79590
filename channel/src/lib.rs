//! transit-channel: one [`Channel`] trait for every transport, and the shared
//! main loop that drives them.
//!
//! This crate is the Rust counterpart of QEMU's `io/` subsystem:
//!
//! * [`Channel`] (QIOChannel): vectored I/O with fds and flags, blocking and
//!   non-blocking, shutdown from any thread, watches.
//! * Transports: [`socket`] (TCP, UNIX, vsock, inherited fds), [`file`](mod@file),
//!   [`websocket`] (client and server, over any channel), [`command`] (a
//!   child's stdin/stdout; this process' stdio),
//!   [`buffer`], [`null`].
//! * [`io`]: `read_all`, `write_all` and friends with QEMU's EOF rules, in
//!   blocking and async forms, and `std::io` adapters.
//! * [`main_loop`]: a glib-style `MainContext` with sources, priorities, fd
//!   watches with read back-pressure, timers, idle, bottom halves, a local
//!   executor, signals and an fd for nesting in other loops.
//! * [`task`]: work on a worker thread, completion on a context.
//! * [`dns`]: name resolution on hickory-resolver.
//! * [`rdma`]: the RDMA transport (credit-based protocol; the verbs backend
//!   needs the `rdma` feature, an in-process model is always built).
//! * [`address`]: endpoint URIs (`tcp:HOST:PORT`, `unix:PATH`, ...).
//! * [`peer_text`]: text a peer sent, with control characters escaped
//!   before it goes into an error.
//!
//! Feature `testing` (off by default) adds what tests of code built on this
//! crate use: `ScriptedChannel` (a channel that plays a script of reads,
//! writes and errors), `fault::FailAfter` (a channel that breaks or hangs
//! after N bytes, as a lost connection would) and `tls::generate` (a throw-away CA issuing test
//! certificates, with rcgen). Feature `tokio`: tokio interop (see `tls`).

pub mod address;
pub mod buffer;
pub mod channel;
pub mod command;
pub mod dns;
pub mod error;
#[cfg(feature = "testing")]
pub mod fault;
pub mod file;
pub mod io;
pub mod main_loop;
pub mod mem_pipe;
pub mod null;
pub mod peer_text;
pub mod prefixed;
pub mod random;
pub mod rdma;
#[cfg(feature = "testing")]
pub mod scripted;
pub mod socket;
pub mod task;
pub mod tls;
pub mod websocket;

pub use address::SocketAddress;
pub use buffer::BufferChannel;
pub use command::{CommandChannel, PipeChannel, Terminator};
pub use dns::Resolver;
pub use file::FileChannel;
pub use mem_pipe::MemPipe;
pub use null::NullChannel;
pub use prefixed::Prefixed;
#[cfg(feature = "testing")]
pub use scripted::ScriptedChannel;
pub use socket::{KeepAlive, SocketChannel};
pub use websocket::{WebSocketChannel, WebSocketConfig, WebSocketHandshake};

pub use channel::{
    Channel, Condition, Features, FlushOutcome, ReadFlags, Readiness, Shutdown, ShutdownChannel,
    ShutdownHandle, WatchFds, WatchSource, WriteFlags,
};
pub use error::{Cause, Error, Result};
pub use main_loop::{
    BottomHalf, ContextHandle, ControlFlow, IoThread, MainContext, MainLoop, Priority, Source,
    SourceId,
};

/// The optional cargo features of this crate (`[features]` of its
/// Cargo.toml), each with whether this build has it: `transit --version`
/// lists them.
pub const OPTIONAL_FEATURES: [(&str, bool); 3] = [
    ("rdma", cfg!(feature = "rdma")),
    ("tokio", cfg!(feature = "tokio")),
    ("testing", cfg!(feature = "testing")),
];
