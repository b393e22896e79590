//! The receiving side of a session: [`Receiver`].
//!
//! Setup: the caller accepts connections (from any listener, in any order)
//! and hands each to [`Receiver::accept_channel`], which classifies it by
//! its first four bytes (peeking where the channel supports `MSG_PEEK`),
//! reads its session header or init packet and files it. Page channels
//! that arrive before the main channel wait until it comes. Once the main
//! channel and all N page channels are present, [`Receiver::run`] creates
//! the destination, answers the sender with an accept record and runs the
//! session.
//!
//! Threads: one per page channel (`multifd-recv-<i>`) reads packet headers
//! and `readv`s pages straight into the destination image; the caller's
//! thread reads the main channel's records; in stream mode a writer thread
//! (`multifd-recv-writer`) puts chunks in order into the sink.
//!
//! Ordering: a page is claimed in a per-epoch bitmap before it is read, so
//! two channels never write one page between two barriers (a sender that
//! tries is a protocol error). At a SYNC every channel thread and the main
//! thread meet at a barrier; the last to arrive clears the claims. A zero
//! page is written as zeros only over a page that received data before; in
//! fresh memory it costs nothing.

mod run;
mod stream;

use run::Run;

use std::io::{IoSliceMut, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use transit_channel::{io as chio, Channel, Features, ReadFlags};

use crate::error::{ChannelId, Ctx, Error, Result, Stage};
use crate::image::DestImage;
use crate::progress::{Progress, Stats};
use crate::rejoin::{Rejoin, Rejoins};
use crate::session::{self, read_exact_deadline, write_record, AbortHandle, Failure};
use crate::wire::{
    self, ConnectionKind, ErrorCode, InitPacket, Layout, Record, SessionHeader, SizeLimit,
    WireError, INIT_PACKET_LEN, SESSION_HEADER_LEN,
};

/// Parameters of a receiving session.
#[derive(Debug, Clone)]
pub struct RecvConfig {
    /// Refuse a sender whose channel count differs.
    pub expected_channels: Option<u32>,
    /// Accept only this session uuid.
    pub expected_uuid: Option<[u8; 16]>,
    /// How long one connection may take to send its first structure
    /// (default 10 s; `None` waits forever).
    pub handshake_timeout: Option<Duration>,
    /// Refuse an image larger than this before accepting it (the sender
    /// reads an error record with code `Refused` naming the limit, and
    /// the session fails). `None`: no bound (a sender's header then
    /// decides how much the receiver allocates).
    pub max_image_size: Option<SizeLimit>,
    /// Fail the session with [`Error::Timeout`] (naming the channel and
    /// the stage) when the sender makes no progress for this long once
    /// data flows (default 60 s; `None` or zero: no limit): a page channel
    /// stalled in the middle of a packet, or a whole session in which no
    /// channel moved (which includes a stream source that produces
    /// nothing for that long: raise the limit for such sources). Waiting
    /// at a barrier for other channels, or for a slow sink, is not idle.
    /// See "Idle timeout" in the [crate docs](crate).
    pub idle_timeout: Option<Duration>,
    /// Delta transfer ([`crate::delta`]): with a [`Destination::File`]
    /// whose path holds a regular file already, start the output as a
    /// copy of it and tell the sender which chunks it has, so only the
    /// others cross the network (default off).
    pub delta: bool,
    /// In-place delta ([`crate::undo`]; only with [`delta`](Self::delta)
    /// and a [`Destination::File`] whose path holds a non-empty regular
    /// file; elsewhere it changes nothing): instead of building a new
    /// file next to it, hash the file where it lies (read-only, no copy)
    /// and write the differing pages straight into it, each write's old
    /// contents saved first in an undo journal (`.NAME.transit-undo`,
    /// durable before the write). A verified session commits (`fsync`,
    /// journal removed); a failed one, of any kind, rolls the file back to
    /// what it was, byte for byte; after a crash the next session on the
    /// path rolls back first. Readers of the file during the session see
    /// a mix of old and new pages. Excludes [`resume`](Self::resume)
    /// (refused as a configuration error). Default off.
    pub inplace: bool,
    /// Resumable output ([`DestImage::open_partial`]): with a
    /// [`Destination::File`], write into `.NAME.transit-partial` next to
    /// the target, left in place if the session fails (or the process is
    /// killed) and resumed by the next run as a delta against what it
    /// holds; renamed over the target once verified (default off).
    pub resume: bool,
    /// Take back a lost page channel: its thread waits this long for the
    /// sender's new connection, offered through
    /// [`Receiver::rejoin_handle`] (see [`crate::rejoin`]). `None`
    /// (default): a lost page channel fails the session.
    pub reconnect_wait: Option<Duration>,
}

impl Default for RecvConfig {
    fn default() -> RecvConfig {
        RecvConfig {
            expected_channels: None,
            expected_uuid: None,
            handshake_timeout: Some(Duration::from_secs(10)),
            max_image_size: None,
            idle_timeout: Some(Duration::from_secs(60)),
            delta: false,
            inplace: false,
            resume: false,
            reconnect_wait: None,
        }
    }
}

/// Where received data goes. An image session needs `Memory`, `File` or
/// `Image`; a stream session needs `Writer`.
pub enum Destination {
    /// New anonymous memory of the image's size.
    Memory {
        /// Fault every page in before the transfer.
        prefault: bool,
    },
    /// A new file that becomes `path` once the session is verified and
    /// before the sender is told so ([`Receiver::run`] persists it; with
    /// [`Receiver::run_with`] the commit step does). See
    /// [`crate::output`] for what the path may be.
    File {
        /// Final path (a regular file or nothing yet).
        path: PathBuf,
        /// Mode of the new file (default: the existing file's, else 0600).
        mode: Option<u32>,
    },
    /// An image the caller prepared; its length must equal the sender's
    /// image size.
    Image(DestImage),
    /// A sink that receives the stream in order.
    Writer(Box<dyn Write + Send>),
    /// Decided from the sender's session header (an image or a stream,
    /// its size, its page size), once the session starts: a receiver that
    /// listens does not know what will come. An error refuses the session
    /// and is what the sender is told.
    Decide(Decider),
}

/// Chooses a [`Destination`] from the sender's session header; see
/// [`Destination::Decide`].
pub type Decider = Box<dyn FnOnce(&SessionHeader) -> Result<Destination> + Send>;

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Memory { prefault } => write!(f, "Memory {{ prefault: {prefault} }}"),
            Destination::File { path, mode } => {
                write!(f, "File {{ path: {path:?}, mode: {mode:?} }}")
            }
            Destination::Image(i) => write!(f, "Image({i:?})"),
            Destination::Writer(_) => f.write_str("Writer(..)"),
            Destination::Decide(_) => f.write_str("Decide(..)"),
        }
    }
}

/// What [`Receiver::accept_channel`] filed a connection as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The main channel.
    Main,
    /// Page channel `n`.
    Page(u32),
}

/// The result of a successful session.
pub struct RecvOutcome {
    /// Statistics (digest and stream length included).
    pub stats: Stats,
    /// The sender's session header.
    pub session: SessionHeader,
    /// The image (image sessions).
    pub image: Option<DestImage>,
    /// The sink, flushed (stream sessions).
    pub writer: Option<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for RecvOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvOutcome")
            .field("stats", &self.stats)
            .field("session", &self.session)
            .field("image", &self.image)
            .finish()
    }
}

struct Conn {
    ch: Box<dyn Channel>,
    ctx: Ctx,
}

/// The receiving side of a multifd session (see the crate
/// documentation).
pub struct Receiver {
    config: RecvConfig,
    dest: Option<Destination>,
    session: Option<SessionHeader>,
    main: Option<Conn>,
    pending: Vec<(Conn, InitPacket)>,
    pages: Vec<Option<Conn>>,
    rejected: Vec<Error>,
    failure: Arc<Failure>,
    fatal: Option<(Ctx, WireError)>,
    progress: Option<Arc<Progress>>,
    /// Lost page channels coming back ([`Receiver::rejoin_handle`]).
    rejoins: Arc<Rejoins>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("session", &self.session)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Receiver {
    /// A receiver waiting for connections.
    pub fn new(config: RecvConfig, dest: Destination) -> Receiver {
        Receiver {
            config,
            dest: Some(dest),
            session: None,
            main: None,
            pending: Vec::new(),
            pages: Vec::new(),
            rejected: Vec::new(),
            failure: Arc::new(Failure::default()),
            fatal: None,
            progress: None,
            rejoins: Rejoins::new(),
        }
    }

    /// The sender's session header, once the main channel arrived.
    pub fn session(&self) -> Option<&SessionHeader> {
        self.session.as_ref()
    }

    /// Live counters, once the main channel arrived.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }

    /// A handle that takes the new connections of lost page channels
    /// while the session runs ([`crate::rejoin`]); with
    /// [`RecvConfig::reconnect_wait`] unset it refuses them all.
    pub fn rejoin_handle(&self) -> Rejoin {
        Rejoin {
            inner: self.rejoins.clone(),
            timeout: self.config.handshake_timeout,
        }
    }

    /// A handle that aborts the session from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            failure: self.failure.clone(),
        }
    }

    /// True once the main channel and every page channel are present.
    pub fn is_ready(&self) -> bool {
        self.session.is_some() && self.pages.iter().all(Option::is_some)
    }

    /// Give up before the session runs: take every connection so far
    /// (the main channel, page channels filed or waiting for it), for the
    /// caller to close as it sees fit (gracefully, so each peer reads why
    /// rather than a reset). The receiver cannot run after this.
    pub fn take_channels(&mut self) -> Vec<Box<dyn Channel>> {
        let mut out: Vec<Box<dyn Channel>> = self.main.take().map(|c| c.ch).into_iter().collect();
        out.extend(self.pending.drain(..).map(|(c, _)| c.ch));
        out.extend(self.pages.drain(..).flatten().map(|c| c.ch));
        out
    }

    /// Page channels that arrived before the main channel and turned out
    /// to belong to another session (dropped when the main channel came).
    pub fn take_rejected(&mut self) -> Vec<Error> {
        std::mem::take(&mut self.rejected)
    }

    /// Take one new connection: classify it by its first bytes, read its
    /// session header or init packet and file it.
    ///
    /// An `Err` rejects that connection (garbage, another session's uuid,
    /// an extra connection, a timeout) and the receiver keeps waiting for
    /// good ones, unless the session itself is broken (a duplicate channel
    /// id, an id out of range, a channel-count mismatch with
    /// [`RecvConfig::expected_channels`]): then the sender is told why and
    /// every later call fails too.
    pub fn accept_channel(&mut self, mut ch: Box<dyn Channel>) -> Result<Accepted> {
        let mut ctx = Ctx::new(ChannelId::Unclassified, session::peer_of(&*ch));
        if let Some((fctx, e)) = &self.fatal {
            // Tell whoever this is (a late main channel reads it).
            let _ = chio::write_all(
                &mut ch,
                &Record::Error {
                    code: ErrorCode::Refused,
                    message: e.to_string(),
                }
                .to_bytes(),
            );
            return Err(fctx.proto(Stage::Handshake, e.clone()));
        }
        if self.failure.is_failed() {
            return Err(Error::Aborted("the session was aborted".into()));
        }
        if self.is_ready() {
            // Say why, so a second sender (or a late duplicate channel)
            // does not just see the connection close.
            let channels = self.pages.len() as u32;
            let e = WireError::ExtraConnection { channels };
            let _ = chio::write_all(
                &mut ch,
                &Record::Error {
                    code: ErrorCode::Refused,
                    message: format!("this receiver is busy with another session: {e}"),
                }
                .to_bytes(),
            );
            return Err(ctx.proto(Stage::Handshake, e));
        }
        ch.set_blocking(true)
            .map_err(|e| ctx.io(Stage::Handshake, e))?;
        let timeout = self.config.handshake_timeout;
        let deadline = session::deadline(timeout);
        let mut buf = [0u8; SESSION_HEADER_LEN];
        let consumed = read_magic(&mut *ch, &mut buf, deadline, timeout, &ctx)?;
        let kind = wire::classify(&buf[..4]).map_err(|e| ctx.proto(Stage::Handshake, e))?;
        let len = match kind {
            ConnectionKind::Main => {
                ctx.id = ChannelId::Main;
                SESSION_HEADER_LEN
            }
            ConnectionKind::Page => INIT_PACKET_LEN,
        };
        let start = if consumed { 4 } else { 0 };
        if !read_exact_deadline(
            &mut *ch,
            &mut buf[start..len],
            deadline,
            timeout,
            &ctx,
            Stage::Handshake,
        )? {
            return Err(ctx.io(
                Stage::Handshake,
                transit_channel::Error::UnexpectedEof {
                    channel: ch.name().to_owned(),
                    op: "read the handshake",
                    expected: len,
                    missing: len - start,
                },
            ));
        }
        match kind {
            ConnectionKind::Main => match wire::decode_session_header(&buf) {
                Ok(hdr) => self.add_main(Conn { ch, ctx }, hdr),
                Err(e) => Err(refuse(&mut *ch, &ctx, e)),
            },
            ConnectionKind::Page => {
                let init =
                    wire::decode_init_packet(&buf).map_err(|e| ctx.proto(Stage::Handshake, e))?;
                ctx.id = ChannelId::Page(init.channel_id);
                self.add_page(Conn { ch, ctx }, init)
            }
        }
    }

    fn add_main(&mut self, mut conn: Conn, hdr: SessionHeader) -> Result<Accepted> {
        if let Some(s) = &self.session {
            let e = if hdr.uuid == s.uuid {
                WireError::DuplicateMain
            } else {
                WireError::UuidMismatch {
                    found: hdr.uuid,
                    expected: s.uuid,
                }
            };
            return Err(refuse(&mut *conn.ch, &conn.ctx, e));
        }
        if let Some(u) = self.config.expected_uuid {
            if hdr.uuid != u {
                let e = WireError::UuidMismatch {
                    found: hdr.uuid,
                    expected: u,
                };
                return Err(refuse(&mut *conn.ch, &conn.ctx, e));
            }
        }
        if let Some(n) = self.config.expected_channels {
            if hdr.channels != n {
                let e = WireError::ChannelCountMismatch {
                    found: hdr.channels,
                    expected: n,
                };
                let err = refuse(&mut *conn.ch, &conn.ctx, e.clone());
                self.fatal = Some((conn.ctx.clone(), e));
                return Err(err);
            }
        }
        if let (Layout::Image { .. }, Some(limit)) = (hdr.layout, self.config.max_image_size) {
            // What the destination must hold: the data, not the holes.
            let size = hdr.data_bytes;
            if size > limit.bytes() {
                let e = WireError::ImageTooLarge { size, limit };
                let err = refuse(&mut *conn.ch, &conn.ctx, e.clone());
                self.fatal = Some((conn.ctx.clone(), e));
                return Err(err);
            }
        }
        if let Ok(h) = conn.ch.shutdown_handle() {
            self.failure.set_main_handle(h);
        }
        conn.ch.set_name(format!("multifd-main {}", conn.ch.name()));
        self.session = Some(hdr);
        self.progress = Some(Arc::new(Progress::new(hdr.channels)));
        self.pages = (0..hdr.channels).map(|_| None).collect();
        self.main = Some(conn);
        for (conn, init) in std::mem::take(&mut self.pending) {
            if init.uuid != hdr.uuid {
                let e = WireError::UuidMismatch {
                    found: init.uuid,
                    expected: hdr.uuid,
                };
                self.rejected.push(conn.ctx.proto(Stage::Handshake, e));
                continue;
            }
            self.file_page(conn, init)?;
        }
        Ok(Accepted::Main)
    }

    fn add_page(&mut self, conn: Conn, init: InitPacket) -> Result<Accepted> {
        if let Some(u) = self.config.expected_uuid {
            if init.uuid != u {
                let e = WireError::UuidMismatch {
                    found: init.uuid,
                    expected: u,
                };
                return Err(conn.ctx.proto(Stage::Handshake, e));
            }
        }
        let id = init.channel_id;
        match self.session {
            Some(s) => {
                if init.uuid != s.uuid {
                    let e = WireError::UuidMismatch {
                        found: init.uuid,
                        expected: s.uuid,
                    };
                    return Err(conn.ctx.proto(Stage::Handshake, e));
                }
                self.file_page(conn, init)?;
            }
            None => {
                if id >= wire::MAX_CHANNELS {
                    let e = WireError::ChannelIdOutOfRange {
                        id,
                        channels: wire::MAX_CHANNELS,
                    };
                    return Err(conn.ctx.proto(Stage::Handshake, e));
                }
                if self
                    .pending
                    .iter()
                    .any(|(_, p)| p.uuid == init.uuid && p.channel_id == id)
                {
                    return Err(self.set_fatal(&conn.ctx, WireError::DuplicateChannel { id }));
                }
                if self.pending.len() >= wire::MAX_CHANNELS as usize {
                    let e = WireError::ExtraConnection {
                        channels: wire::MAX_CHANNELS,
                    };
                    return Err(conn.ctx.proto(Stage::Handshake, e));
                }
                if let Ok(h) = conn.ch.shutdown_handle() {
                    self.failure.add_page_handle(h);
                }
                self.pending.push((conn, init));
            }
        }
        Ok(Accepted::Page(id))
    }

    /// File a page channel of this session into its slot.
    fn file_page(&mut self, mut conn: Conn, init: InitPacket) -> Result<()> {
        let Some(s) = self.session else {
            return Err(Error::Config("no session yet".into()));
        };
        if let Err(e) = init.check(&s) {
            return Err(self.set_fatal(&conn.ctx, e));
        }
        let id = init.channel_id as usize;
        if self.pages[id].is_some() {
            return Err(self.set_fatal(
                &conn.ctx,
                WireError::DuplicateChannel {
                    id: init.channel_id,
                },
            ));
        }
        if let Ok(h) = conn.ch.shutdown_handle() {
            self.failure.add_page_handle(h);
        }
        conn.ch
            .set_name(format!("multifd-recv-{id} {}", conn.ch.name()));
        self.pages[id] = Some(conn);
        Ok(())
    }

    /// The session is broken: remember why, tell the sender on the main
    /// channel if it is here.
    fn set_fatal(&mut self, ctx: &Ctx, e: WireError) -> Error {
        if let Some(m) = self.main.as_mut() {
            let rec = Record::Error {
                code: ErrorCode::Protocol,
                message: format!("{}: {e}", ctx.id),
            };
            let _ = chio::write_all(&mut m.ch, &rec.to_bytes());
        }
        self.fatal = Some((ctx.clone(), e.clone()));
        ctx.proto(Stage::Handshake, e)
    }

    /// Run the session once every channel is present: create the
    /// destination, accept, receive until the end record, verify, make
    /// the output durable and in place (a file destination is persisted,
    /// a sink flushed), and only then answer with the verdict. Returns
    /// the statistics and the image (or the sink).
    pub fn run(self) -> Result<RecvOutcome> {
        self.run_with(|out| {
            if let Some(w) = out.writer.as_mut() {
                w.flush()
                    .map_err(|e| Error::data("flush the stream's destination", e))?;
            }
            match out.image.as_mut() {
                Some(img) if img.is_file() => img
                    .persist_in_place()
                    .map_err(|e| Error::data("put the output in place", e)),
                _ => Ok(()),
            }
        })
    }

    /// [`run`](Self::run) with the caller's commit step: once the session
    /// is verified (totals, digest, every page covered), `commit` puts the
    /// outcome where it belongs (flush, fsync, rename, write it out) and
    /// the sender is told of success only if it returns `Ok`; its error
    /// goes to the sender instead of the verdict. So a sender's success
    /// means the data is in place, never only that it arrived.
    pub fn run_with<F>(mut self, commit: F) -> Result<RecvOutcome>
    where
        F: FnOnce(&mut RecvOutcome) -> Result<()>,
    {
        if let Some((ctx, e)) = &self.fatal {
            return Err(ctx.proto(Stage::Handshake, e.clone()));
        }
        let (Some(session), Some(progress), true) =
            (self.session, self.progress.clone(), self.is_ready())
        else {
            let have = self.pages.iter().filter(|p| p.is_some()).count();
            return Err(Error::Config(format!(
                "run called before every channel arrived (main channel {}, {have} of {} page channels)",
                if self.main.is_some() { "present" } else { "missing" },
                self.pages.len()
            )));
        };
        let Some(mut main) = self.main.take() else {
            return Err(Error::Config("no main channel".into()));
        };
        let failure = self.failure.clone();
        if failure.is_failed() {
            return Err(failure.take_error());
        }
        let target = match prepare(&session, self.dest.take(), &self.config) {
            Ok(t) => t,
            Err(e) => {
                let rec = Record::Error {
                    code: e.code(),
                    message: e.to_string(),
                };
                let _ = chio::write_all(&mut main.ch, &rec.to_bytes());
                return Err(e);
            }
        };
        let (target, have) = target;
        // An in-place update is rolled back here when the session fails
        // (its image's drop would do it too, but could not say that it
        // failed).
        let undo = match &target {
            Target::Image(img) => img.undo().cloned(),
            Target::Stream(_) => None,
        };
        let out = self.serve(session, progress, failure, main, target, have, commit);
        match (out, undo) {
            (Err(e), Some(u)) => match u.rollback() {
                Ok(_) => Err(e),
                Err(rollback) => Err(Error::NotRolledBack {
                    cause: Box::new(e),
                    rollback,
                }),
            },
            (out, _) => out,
        }
    }

    /// Accept, send the Have record if any, run the session into `target`.
    #[allow(clippy::too_many_arguments)]
    fn serve<F>(
        &mut self,
        session: SessionHeader,
        progress: Arc<Progress>,
        failure: Arc<Failure>,
        mut main: Conn,
        target: Target,
        have: Option<Record>,
        commit: F,
    ) -> Result<RecvOutcome>
    where
        F: FnOnce(&mut RecvOutcome) -> Result<()>,
    {
        write_record(
            &mut main.ch,
            &Record::Accept {
                channels: session.channels,
                have: have.is_some(),
            },
            &main.ctx,
            Stage::Handshake,
        )?;
        let have = match have {
            Some(h) => {
                write_record(&mut main.ch, &h, &main.ctx, Stage::Handshake)?;
                match h {
                    Record::Have { chunk_size, hashes } => Some(Arc::new((chunk_size, hashes))),
                    _ => None,
                }
            }
            None => None,
        };
        progress.restart();
        let conns: Vec<Conn> = self.pages.drain(..).flatten().collect();
        let mut run = Run::start(
            session,
            progress,
            failure,
            target,
            conns,
            run::RunOptions {
                idle: (main.ctx.clone(), self.config.idle_timeout),
                have,
                rejoin: self
                    .config
                    .reconnect_wait
                    .filter(|w| !w.is_zero())
                    .map(|w| (self.rejoins.clone(), w)),
            },
        );
        let result = run.serve_main(&mut main);
        let out = run.finish(&mut main, result, commit);
        self.rejoins.close();
        out
    }
}

/// Reply to a refused main channel with an error record; build the error.
fn refuse(ch: &mut dyn Channel, ctx: &Ctx, e: WireError) -> Error {
    let rec = Record::Error {
        code: ErrorCode::Refused,
        message: e.to_string(),
    };
    let _ = chio::write_all(ch, &rec.to_bytes());
    ctx.proto(Stage::Handshake, e)
}

/// Get the first four bytes into `buf[..4]`: peek where possible (returns
/// false: nothing consumed), else read them (returns true).
fn read_magic(
    ch: &mut dyn Channel,
    buf: &mut [u8],
    deadline: Option<std::time::Instant>,
    timeout: Option<Duration>,
    ctx: &Ctx,
) -> Result<bool> {
    let eof = |ch: &dyn Channel, got: usize| {
        ctx.io(
            Stage::Handshake,
            transit_channel::Error::UnexpectedEof {
                channel: ch.name().to_owned(),
                op: "read the connection magic",
                expected: 4,
                missing: 4 - got,
            },
        )
    };
    if ch.has_feature(Features::READ_MSG_PEEK) {
        loop {
            session::wait_readable(ch, deadline, ctx, Stage::Handshake, timeout)?;
            match ch.readv(
                &mut [IoSliceMut::new(&mut buf[..4])],
                None,
                ReadFlags::MSG_PEEK,
            ) {
                Ok(0) => return Err(eof(ch, 0)),
                Ok(n) if n >= 4 => return Ok(false),
                // Fewer than 4 bytes so far (rare): readiness stays on, so
                // back off briefly instead of spinning.
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(transit_channel::Error::WouldBlock) => {}
                Err(e) => return Err(ctx.io(Stage::Handshake, e)),
            }
        }
    }
    if !read_exact_deadline(ch, &mut buf[..4], deadline, timeout, ctx, Stage::Handshake)? {
        return Err(eof(ch, 0));
    }
    Ok(true)
}

enum Target {
    Image(DestImage),
    Stream(Box<dyn Write + Send>),
}

/// Create or check the destination for the session's layout; with
/// `delta` and an existing file at a file destination's path, start from
/// it (or update it in place) and return the [`Record::Have`] to send.
/// Before anything else, an interrupted in-place update of a file
/// destination's path is rolled back ([`crate::undo::recover`]).
fn prepare(
    session: &SessionHeader,
    dest: Option<Destination>,
    config: &RecvConfig,
) -> Result<(Target, Option<Record>)> {
    let dest = match dest {
        Some(Destination::Decide(decide)) => Some(decide(session)?),
        d => d,
    };
    let (delta, resume) = (config.delta, config.resume);
    if let Some(Destination::File { path, .. }) = dest.as_ref() {
        crate::undo::recover(path)?;
    }
    if config.inplace && resume {
        return Err(Error::Config(
            "an in-place update cannot also be resumable: it is rolled back when it fails (use one of inplace and resume)".into(),
        ));
    }
    if let (true, Layout::Image { size }, Some(Destination::File { path, mode })) =
        (resume, session.layout, dest.as_ref())
    {
        let chunk_size = crate::delta::chunk_size_for(size, session.page_size);
        let (img, hashes) =
            DestImage::open_partial(path, size, *mode, chunk_size, delta).map_err(|e| {
                Error::data(format!("open the partial output of {}", path.display()), e)
            })?;
        let have = hashes.map(|hashes| Record::Have { chunk_size, hashes });
        return Ok((Target::Image(img), have));
    }
    if let (true, Layout::Image { size }, Some(Destination::File { path, mode })) =
        (delta, session.layout, dest.as_ref())
    {
        let old = std::fs::File::open(path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() > 0));
        if let (Some(_), true) = (&old, config.inplace) {
            let chunk_size = crate::delta::chunk_size_for(size, session.page_size);
            let journal = crate::undo::Journal::create(path, session.page_size)?;
            let (img, hashes) = DestImage::in_place(journal, size, *mode, chunk_size)
                .map_err(|e| Error::data(format!("update {} in place", path.display()), e))?;
            return Ok((
                Target::Image(img),
                Some(Record::Have { chunk_size, hashes }),
            ));
        }
        if let Some(old) = old {
            let chunk_size = crate::delta::chunk_size_for(size, session.page_size);
            let (img, hashes) = DestImage::create_file_from(path, old, size, *mode, chunk_size)
                .map_err(|e| {
                    Error::data(format!("start {} from its older copy", path.display()), e)
                })?;
            return Ok((
                Target::Image(img),
                Some(Record::Have { chunk_size, hashes }),
            ));
        }
    }
    prepare_plain(session, dest).map(|t| (t, None))
}

/// Create or check the destination for the session's layout.
fn prepare_plain(session: &SessionHeader, dest: Option<Destination>) -> Result<Target> {
    let refuse = |m: String| Err(Error::Config(m));
    match (session.layout, dest) {
        (_, None) => refuse("no destination".into()),
        (Layout::Image { size }, Some(Destination::Memory { prefault })) => {
            DestImage::anonymous(size, prefault)
                .map(Target::Image)
                .map_err(|e| Error::data(format!("allocate a {size}-byte destination image"), e))
        }
        (Layout::Image { size }, Some(Destination::File { path, mode })) => {
            DestImage::create_file(&path, size, mode)
                .map(Target::Image)
                .map_err(|e| Error::data(format!("create destination file {}", path.display()), e))
        }
        (Layout::Image { size }, Some(Destination::Image(img))) => {
            if img.len() as u64 != size {
                return refuse(format!(
                    "the destination image has {} bytes but the sender's image has {size}",
                    img.len()
                ));
            }
            Ok(Target::Image(img))
        }
        (Layout::Image { .. }, Some(Destination::Writer(_))) => refuse(
            "the sender sends an image but the destination is a byte stream; \
             use a memory or file destination"
                .into(),
        ),
        (Layout::Stream, Some(Destination::Writer(w))) => Ok(Target::Stream(w)),
        (_, Some(Destination::Decide(_))) => {
            refuse("a destination decider chose to decide again".into())
        }
        (Layout::Stream, Some(_)) => refuse(
            "the sender sends a byte stream but the destination is an image; \
             use a writer destination"
                .into(),
        ),
    }
}

/// The least a receiver can be, on a session's main channel: accept the
/// session, ignore its sync records, and answer its end record with the
/// sender's own totals (verdict OK). Its page channels must be read by
/// someone else (`transit bench`'s null transport discards them in the
/// kernel). A measuring instrument for the sender's side: nothing is
/// verified.
pub fn null_peer(ch: &mut dyn Channel) -> Result<()> {
    let ctx = Ctx::new(ChannelId::Main, session::peer_of(ch));
    let mut hdr = [0u8; wire::SESSION_HEADER_LEN];
    chio::read_all(ch, &mut hdr).map_err(|e| ctx.io(Stage::Handshake, e))?;
    let h = wire::decode_session_header(&hdr).map_err(|e| ctx.proto(Stage::Handshake, e))?;
    let accept = Record::Accept {
        channels: h.channels,
        have: false,
    };
    chio::write_all(ch, &accept.to_bytes()).map_err(|e| ctx.io(Stage::Handshake, e))?;
    let mut body = vec![0u8; 8 + wire::MAX_ERROR_MESSAGE];
    loop {
        let mut rh = [0u8; wire::RECORD_HEADER_LEN];
        chio::read_all(ch, &mut rh).map_err(|e| ctx.io(Stage::End, e))?;
        let rh = wire::decode_record_header(&rh).map_err(|e| ctx.proto(Stage::End, e))?;
        let Some(body) = body.get_mut(..rh.len as usize) else {
            return Err(ctx.proto(
                Stage::End,
                WireError::Unexpected("a record other than sync or end"),
            ));
        };
        chio::read_all(ch, body).map_err(|e| ctx.io(Stage::End, e))?;
        match wire::decode_record_body(&rh, body).map_err(|e| ctx.proto(Stage::End, e))? {
            Record::Sync { .. } => {}
            Record::End(totals) => {
                let v = Record::Verdict {
                    status: wire::VerdictStatus::Ok,
                    totals,
                };
                return chio::write_all(ch, &v.to_bytes()).map_err(|e| ctx.io(Stage::End, e));
            }
            Record::Error { code, message } => return Err(ctx.remote(Stage::End, code, message)),
            _ => {
                return Err(ctx.proto(
                    Stage::End,
                    WireError::Unexpected("a record other than sync or end"),
                ))
            }
        }
    }
}
