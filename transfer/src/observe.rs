//! What a caller sees of a run while it runs: the [`Watch`] (live
//! counters a progress display reads) and the [`Observer`] hooks the
//! drivers call on the main loop's thread.
//!
//! A driver ([`crate::send::send`], [`crate::receive::receive`]) runs its
//! phases on a [`Runtime`]; just before the phase that moves data it calls
//! [`Observer::started`] with the run's [`Watch`], and
//! [`Observer::stopped`] as soon as that phase ends, well or not. A
//! display installs its timers on the context in `started` (they run on
//! the loop while the data moves) and removes them in `stopped`; the
//! driver's worker threads fill the watch meanwhile. A listening receiver
//! also says where it listens ([`Observer::listening`]) before it waits.
//! `()` observes nothing.
//!
//! Limits: the hooks run on the loop's thread, between phases: a hook
//! that blocks holds the run up (and its signal handling).
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use transit_channel::MainContext;
//! use transit_transfer::{Observer, Watch};
//!
//! /// Prints the expected size when data starts to move.
//! struct Announce;
//!
//! impl Observer for Announce {
//!     fn started(&mut self, _ctx: &MainContext, watch: &Watch) {
//!         println!("moving {} bytes", watch.total());
//!     }
//! }
//!
//! let watch = Watch::copy(1 << 20);
//! Announce.started(&MainContext::new()?, &watch);
//! if let Watch::Copy { copied, .. } = &watch {
//!     copied.store(4096, Ordering::Relaxed); // what a driver does
//! }
//! assert!(watch.started());
//! # Ok::<(), transit_channel::Error>(())
//! ```
//!
//! [`Runtime`]: transit_channel::main_loop::runtime::Runtime

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use transit_channel::MainContext;
use transit_multifd::Progress;

/// The live counters of a session that may not exist yet (filled in once
/// the handshake is done).
pub type ProgressSlot = Arc<Mutex<Option<Arc<Progress>>>>;

/// The counters of a run, shared with the driver's threads that fill
/// them.
#[derive(Clone)]
pub enum Watch {
    /// A multifd session.
    Session {
        /// The session's [`Progress`], once it runs.
        progress: ProgressSlot,
        /// Bytes a zero page (image) or zero chunk (stream) stands for;
        /// 0 while unknown.
        unit: Arc<AtomicU64>,
        /// Bytes the run is expected to cover (every pass of an image);
        /// 0 while unknown and for a stream.
        total: Arc<AtomicU64>,
    },
    /// A plain copy (`--raw`, `file:`).
    Copy {
        /// Bytes copied so far.
        copied: Arc<AtomicU64>,
        /// Bytes the copy is expected to take (0: unknown).
        total: Arc<AtomicU64>,
    },
}

impl Watch {
    /// The watch of a session of `total` bytes (0: unknown), zero pages
    /// or chunks standing for `unit` bytes (0: unknown yet).
    pub fn session(unit: u64, total: u64) -> Watch {
        Watch::Session {
            progress: ProgressSlot::default(),
            unit: Arc::new(AtomicU64::new(unit)),
            total: Arc::new(AtomicU64::new(total)),
        }
    }

    /// The watch of a plain copy of `total` bytes (0: unknown).
    pub fn copy(total: u64) -> Watch {
        Watch::Copy {
            copied: Arc::default(),
            total: Arc::new(AtomicU64::new(total)),
        }
    }

    /// Bytes the run is expected to cover now (0: unknown).
    pub fn total(&self) -> u64 {
        match self {
            Watch::Session { total, .. } | Watch::Copy { total, .. } => {
                total.load(Ordering::Relaxed)
            }
        }
    }

    /// A copy has started, or a session is past its handshake.
    pub fn started(&self) -> bool {
        match self {
            Watch::Session { progress, .. } => {
                progress.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            }
            Watch::Copy { .. } => true,
        }
    }

    /// A copy's byte counter (a new one for a session, which has none).
    pub(crate) fn copied(&self) -> Arc<AtomicU64> {
        match self {
            Watch::Copy { copied, .. } => copied.clone(),
            Watch::Session { .. } => Arc::default(),
        }
    }
}

/// What a driver tells its caller while it runs, on the main loop's
/// thread; see the [module documentation](self). Every hook does nothing
/// unless implemented.
pub trait Observer {
    /// A receiver listens on these addresses (as people write them: the
    /// kernel's port for port 0) and waits for its sender.
    fn listening(&mut self, uris: &[String]) {
        let _ = uris;
    }

    /// The data is about to move; `watch` has its counters.
    fn started(&mut self, ctx: &MainContext, watch: &Watch) {
        let _ = (ctx, watch);
    }

    /// The data phase ended (well or not).
    fn stopped(&mut self, ctx: &MainContext) {
        let _ = ctx;
    }
}

/// Observes nothing.
impl Observer for () {}
