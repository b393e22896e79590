//! Send an [`Input`] to an endpoint: [`send`].
//!
//! By the endpoint and [`SendOptions::raw`]:
//!
//! - a multifd session (the default): the main channel and every page
//!   channel opened in parallel
//!   ([`open_session`](transit_endpoint::connect::open_session), the most
//!   telling error if one fails, the channels that did open told why the
//!   sender gives up), then a [`Sender`] on a worker: an image in
//!   [`SendOptions::passes`] passes (passes after the first send the pages
//!   [`dirty_image`] re-dirties), a stream to its end, with an optional
//!   SHA-256; a lost page channel connects again within
//!   [`SendOptions::reconnect`] ([`reopener`](transit_endpoint::connect::reopener)).
//!   Over `exec:` every run of the command must end well after the
//!   session (they are killed at once if it failed), and a failure before
//!   the session got going says what the command must be
//!   ([`EXEC_EXPECTS`]);
//! - a plain copy (`raw`, and `fd:`/`stdio:` people use with it): one
//!   channel of bytes, a framed receiver's refusal read back and reported;
//! - `file:PATH`: the bytes into a file (zero runs left as holes, renamed
//!   into place when complete) or in order into a device or FIFO.
//!
//! Phases run on the caller's [`Runtime`]; a signal aborts the session
//! (the receiver is told) or shuts the channels down, and the run ends
//! with [`Error::Cancelled`]. Argument checks (channel counts, page sizes,
//! which endpoints take a session) are the caller's: see the `transit`
//! binary's `send`.
//!
//! Limits: `exec:` commands are process-wide
//! ([`transit_endpoint::exec`]): one framed `exec:` send at a time per
//! process.
//!
//! ```
//! use transit_channel::main_loop::runtime::Runtime;
//! use transit_endpoint::Endpoint;
//! use transit_transfer::{payload, send, Mode, SendOptions};
//!
//! let path = std::env::temp_dir().join(format!("transit-send-doc-{}", std::process::id()));
//! let rt = Runtime::new()?;
//! let mut opts = SendOptions::new(Endpoint::File(path.clone()));
//! opts.checksum = true;
//! let input = payload::generate(1 << 20, 4096, 0.5, 7, false)?;
//! let done = send::send(&rt, &opts, input, &mut ())?;
//! assert_eq!((done.mode, done.stats.bytes), (Mode::Raw, 1 << 20));
//! assert_eq!(std::fs::metadata(&path)?.len(), 1 << 20);
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transit_channel::main_loop::runtime::Runtime;
use transit_channel::{Channel, Shutdown, ShutdownHandle};
use transit_endpoint::connect;
use transit_endpoint::join::JoinTag;
use transit_endpoint::{Endpoint, TransportOpts};
use transit_multifd::checksum;
use transit_multifd::copy::{ChannelSink, FileSink, IdleWatch, Sink, WriteSink};
use transit_multifd::dirty::dirty_image;
use transit_multifd::output::{open_stream, resolve, OutputTarget};
use transit_multifd::progress::ThreadCpu;
use transit_multifd::raw::RawError;
use transit_multifd::undo::{Recovered, UndoError};
use transit_multifd::{
    AbortHandle, ChannelStats, Payload, Reconnect, SendConfig, Sender, Stage, Stats,
};

use crate::error::exec_hint;
use crate::observe::{Observer, ProgressSlot, Watch};
use crate::payload::{copy_input, Input};
use crate::{Error, Mode, Outcome};

/// What a framed `exec:` command must be.
pub const EXEC_EXPECTS: &str = "a framed exec: runs COMMAND once per channel and speaks transit's protocol over its stdin and stdout, so COMMAND must end in `transit recv stdio:` (e.g. exec:'ssh HOST transit recv stdio: --output FILE'); to pipe plain bytes into a command, use --raw";

/// How [`send`] sends.
#[derive(Clone)]
pub struct SendOptions {
    /// Where to.
    pub endpoint: Endpoint,
    /// How channels are opened (connect timeout and retry, TLS, the
    /// cancel switch; the join token of a framed `exec:` is made here
    /// when it has none).
    pub transport: TransportOpts,
    /// The session's settings (page and packet sizes, verification, idle
    /// timeout, bandwidth cap, compression); also the idle timeout and the
    /// cap of a plain copy. A [`SendConfig::reconnect`] of `None` is set
    /// from [`reconnect`](Self::reconnect).
    pub config: SendConfig,
    /// Page channels of a session (besides the main channel).
    pub channels: u32,
    /// A plain copy on one channel instead of a session (`file:` always
    /// is one).
    pub raw: bool,
    /// Passes over an image (1: send it once).
    pub passes: u32,
    /// Share of pages re-dirtied between passes.
    pub dirty_ratio: f64,
    /// Seed of the re-dirtied pages' pattern.
    pub seed: u64,
    /// Compute the payload's SHA-256 ([`Outcome::sha256`]).
    pub checksum: bool,
    /// How long a lost page channel may stay lost while it connects again
    /// (`None`: a lost channel fails the session).
    pub reconnect: Option<Duration>,
    /// Permissions of a new `file:` output (`None`: an existing file's
    /// are kept, a new one is 600).
    pub mode: Option<u32>,
}

impl SendOptions {
    /// Send to `endpoint` with the `transit send` defaults: 4 page
    /// channels, one pass, a 30 s connect timeout, no reconnects.
    pub fn new(endpoint: Endpoint) -> SendOptions {
        SendOptions {
            endpoint,
            transport: TransportOpts::new(Duration::from_secs(30)),
            config: SendConfig::default(),
            channels: 4,
            raw: false,
            passes: 1,
            dirty_ratio: 0.05,
            seed: 1,
            checksum: false,
            reconnect: None,
            mode: None,
        }
    }
}

/// Send `input` as `opts` say (see the [module documentation](self)),
/// telling `observer` when the data moves.
pub fn send(
    rt: &Runtime,
    opts: &SendOptions,
    input: Input,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    match &opts.endpoint {
        Endpoint::File(path) => send_to_file(rt, opts, input, path, observer),
        ep if opts.raw => send_raw(rt, opts, input, ep.clone(), observer),
        ep => send_multifd(rt, opts, input, ep.clone(), observer),
    }
}

/// Roll back an in-place update of `path` that a killed receiver left
/// (its undo journal), before `path` is read or written: what was put
/// back, if anything; an error (nothing was `done`: `sent`, `received`)
/// when that cannot be done.
pub fn roll_back_interrupted(path: &Path, done: &'static str) -> Result<Option<Recovered>, Error> {
    let path_buf = || path.to_path_buf();
    transit_multifd::undo::recover(path).map_err(|source| match source {
        UndoError::Busy { .. } => Error::UpdateInProgress {
            path: path_buf(),
            done,
            source,
        },
        source => Error::RollBack {
            path: path_buf(),
            done,
            source,
        },
    })
}

/// Statistics of a plain copy (one channel, no pages).
/// `cpu_seconds`: CPU time of the thread that copied.
pub fn raw_stats(bytes: u64, seconds: f64, cpu_seconds: f64) -> Stats {
    Stats {
        bytes,
        wire_bytes: bytes,
        pages: 0,
        zero_pages: 0,
        packets: 0,
        syncs: 0,
        seconds,
        digest: 0,
        stream_len: bytes,
        peak_buffers: 0,
        zero_copy_flushes: 0,
        zero_copy_copied: 0,
        kept_pages: 0,
        reconnects: 0,
        channels: vec![ChannelStats {
            id: 0,
            bytes,
            wire_bytes: bytes,
            pages: 0,
            zero_pages: 0,
            packets: 0,
            busy_seconds: seconds,
            cpu_seconds,
        }],
    }
}

fn send_multifd(
    rt: &Runtime,
    opts: &SendOptions,
    input: Input,
    ep: Endpoint,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    let exec = matches!(ep, Endpoint::Exec(_));
    let mut transport = opts.transport.clone();
    if exec && transport.join.is_none() {
        transport.join = Some(JoinTag::new().map_err(Error::JoinToken)?);
    }
    // The main channel and N page channels, connected (and their
    // handshakes run) in parallel.
    let n = opts.channels;
    let cancel = transport.cancel.clone();
    let (e2, t2) = (ep.clone(), transport.clone());
    let opened = rt.run_task(
        "connect",
        move || cancel.cancel(),
        move || Ok::<_, Error>(connect::open_session(&e2, &t2, n)),
    )?;
    let mut chans = opened.map_err(|mut e| {
        // Say so on the connections that did open: a receiver that took
        // one of them for plain bytes (`recv --raw`) then fails too,
        // naming the mismatch, instead of writing an empty file.
        transit_multifd::give_up(&mut e.opened, &e.error.message);
        exec_hint(e.error, exec)
    })?;
    let main = chans.remove(0);
    let peer = main.peer_address().map(|a| a.to_string());

    // The session.
    let handles: Vec<ShutdownHandle> = std::iter::once(&main)
        .chain(chans.iter())
        .filter_map(|c| c.shutdown_handle().ok())
        .collect();
    let abort: Arc<Mutex<Option<AbortHandle>>> = Arc::default();
    let (mode, image_bytes) = match &input {
        Input::Image { image, .. } => (Mode::Image, image.len() as u64),
        Input::Stream { .. } => (Mode::Stream, 0),
    };
    let image = mode == Mode::Image;
    let (unit, total) = if image {
        let extra = opts.passes.saturating_sub(1) as f64 * opts.dirty_ratio;
        let total = (image_bytes as f64 * (1.0 + extra)) as u64;
        (opts.config.page_size, total)
    } else {
        (opts.config.packet_payload, 0)
    };
    let progress = ProgressSlot::default();
    let watch = Watch::Session {
        progress: progress.clone(),
        unit: Arc::new(AtomicU64::new(u64::from(unit))),
        total: Arc::new(AtomicU64::new(total)),
    };
    let cancel_abort = abort.clone();
    let on_cancel = move || {
        let guard = cancel_abort.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(a) => a.abort("cancelled by a signal on the sender"),
            None => {
                for h in &handles {
                    let _ = h.shutdown(Shutdown::Both);
                }
            }
        }
    };
    let mut config = opts.config.clone();
    if let (None, Some(window)) = (&config.reconnect, opts.reconnect) {
        config.reconnect =
            connect::reopener(&ep, &transport, n + 1).map(|f| Reconnect::new(window, Arc::from(f)));
    }
    let (passes, ratio, seed) = (opts.passes, opts.dirty_ratio, opts.seed);
    let work_abort = abort.clone();
    let want_sha = opts.checksum;
    observer.started(rt.ctx(), &watch);
    let result = rt.run_task("session", on_cancel, move || -> Result<_, Error> {
        let stream_sha = checksum::Shared::new();
        let mut extents = None;
        let (src_payload, mut reader) = match input {
            Input::Image { image, .. } => {
                extents = image.data_extents().map(<[_]>::to_vec);
                (Payload::Image(image), None)
            }
            Input::Stream { reader, .. } if want_sha => (
                Payload::Stream,
                Some(Box::new(checksum::Reading::new(reader, stream_sha.clone()))
                    as Box<dyn std::io::Read + Send>),
            ),
            Input::Stream { reader, .. } => (Payload::Stream, Some(reader)),
        };
        let mut tx = Sender::new(config, src_payload, main, chans).map_err(|e| {
            let handshake = e.stage() == Some(Stage::Handshake);
            exec_hint(e, exec && handshake)
        })?;
        *progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.progress());
        *work_abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.abort_handle());
        match reader.as_mut() {
            None => {
                tx.send_all()?;
                let ps = tx.session().page_size as usize;
                for p in 2..=passes {
                    let img = tx.image_mut()?;
                    let list = dirty_image(img, ps, ratio, seed, p);
                    tx.send_pass(list)?;
                }
            }
            Some(r) => {
                tx.send_stream(r.as_mut())?;
            }
        }
        // Pages went out of order: the image is hashed in order now, after
        // its last pass (the receiver is finishing meanwhile).
        let sha = match (want_sha, reader.is_some()) {
            (false, _) => None,
            (true, true) => stream_sha.finish(),
            (true, false) => Some(checksum::of_image(
                tx.image().unwrap_or_default(),
                extents.as_deref(),
            )),
        };
        Ok((tx.finish()?, sha))
    });
    observer.stopped(rt.ctx());
    if exec && result.is_err() {
        // The session failed: nothing the commands do now can change
        // that, so they end at once rather than after the close timeout.
        transit_endpoint::exec::abort_commands();
    } else if exec {
        // Every run of the command must end well: the far end puts its
        // output in place after the verdict.
        rt.run_task(
            "wait-commands",
            || {},
            || transit_endpoint::exec::wait_commands().map_err(Error::Commands),
        )?;
    }
    let (stats, sha256) = result?;
    Ok(Outcome {
        peer,
        mode,
        passes: if image { opts.passes } else { 1 },
        page_size: if image { opts.config.page_size } else { 0 },
        image_bytes: if image { image_bytes } else { stats.stream_len },
        verified: opts.config.verify,
        sha256,
        in_place: false,
        compressed: false,
        stats,
    })
}

fn send_raw(
    rt: &Runtime,
    opts: &SendOptions,
    input: Input,
    ep: Endpoint,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    let t = opts.transport.clone();
    let cancel = opts.transport.cancel.clone();
    let ch = rt.run_task(
        "connect",
        move || cancel.cancel(),
        move || connect::open(&ep, &t, 0, 1, "raw channel").map_err(Error::Open),
    )?;
    let peer = Some(ch.peer_name());
    let handle = ch.shutdown_handle().ok();
    let watch = Watch::copy(match &input {
        Input::Image { image, .. } => image.len() as u64,
        Input::Stream { .. } => 0,
    });
    let count = watch.copied();
    let idle_limit = opts.config.idle_timeout;
    let mut sha = opts.checksum.then(checksum::Sha256::new);
    let max_bandwidth = opts.config.max_bandwidth;
    observer.started(rt.ctx(), &watch);
    let copied = rt.run_task(
        "raw-send",
        move || {
            if let Some(h) = &handle {
                let _ = h.shutdown(Shutdown::Both);
            }
        },
        move || {
            let mut ch = ch;
            let _ = ch.set_blocking(true);
            let t = Instant::now();
            let cpu = ThreadCpu::start();
            let idle = IdleWatch::start(idle_limit, count.clone(), ch.shutdown_handle().ok());
            let mut sink = ChannelSink::new(ch.as_mut(), &idle).with_limit(max_bandwidth);
            let copied = checksum::through(&mut sink, sha.as_mut(), |sink| {
                copy_input(input, sink, &count)
            });
            // A command that died said why (its exit status) in the error.
            let told = sink.exited().is_some();
            let n = match copied {
                Ok(n) => n,
                Err(copy) => {
                    if let (Some(l), true) = (idle_limit, idle.fired()) {
                        return Err(Error::SendIdle {
                            channel: ch.name().to_owned(),
                            seconds: l.as_secs_f64(),
                        });
                    }
                    if let Some(refused) =
                        transit_multifd::raw::refusal(ch.as_mut(), Duration::from_millis(500))
                    {
                        return Err(raw_failed(refused));
                    }
                    let channel = ch.name().to_owned();
                    return Err(match ch.close() {
                        Err(source) if !told => Error::RawClosed {
                            source: Box::new(source),
                            copy,
                        },
                        _ => Error::RawCopy {
                            channel,
                            source: copy,
                        },
                    });
                }
            };
            let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu.seconds());
            // A framed receiver's refusal, read before closing, fails the
            // send.
            transit_multifd::raw::end(ch.as_mut(), Duration::from_secs(5)).map_err(raw_failed)?;
            Ok((n, secs, cpu, sha.map(checksum::Sha256::finish)))
        },
    );
    observer.stopped(rt.ctx());
    let (bytes, secs, cpu, sha) = copied?;
    Ok(Outcome::copy(raw_stats(bytes, secs, cpu), peer, sha))
}

fn send_to_file(
    rt: &Runtime,
    opts: &SendOptions,
    input: Input,
    path: &Path,
    observer: &mut dyn Observer,
) -> Result<Outcome, Error> {
    let watch = Watch::copy(0);
    let count = watch.copied();
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let target = resolve(path).map_err(Error::OutputPath)?;
    let mode = opts.mode;
    let mut sha = opts.checksum.then(checksum::Sha256::new);
    observer.started(rt.ctx(), &watch);
    let copied = rt.run_task(
        "file-send",
        move || flag.store(true, Ordering::Relaxed),
        move || {
            let t = Instant::now();
            let cpu = ThreadCpu::start();
            let mut out = None;
            let mut sink: Box<dyn Sink> = match target {
                OutputTarget::File(p) => {
                    let (file, temp) =
                        transit_multifd::output::temp_writer(&p, mode).map_err(Error::Output)?;
                    out = Some((temp, p.clone()));
                    let name = p.display().to_string();
                    Box::new(FileSink { file, len: 0, name })
                }
                // A device or FIFO: written in order, never replaced.
                OutputTarget::Stream(path) => match open_stream(&path) {
                    Ok(file) => Box::new(WriteSink(file)),
                    Err(source) => return Err(Error::OpenOutput { path, source }),
                },
            };
            let n = checksum::through(sink.as_mut(), sha.as_mut(), |s| {
                copy_input(input, s, &count)
            })?;
            sink.done()?;
            if cancelled.load(Ordering::Relaxed) {
                // The runtime reports the signal; nothing is put in place.
                return Err(Error::Cancelled(0));
            }
            if let Some((mut temp, path)) = out {
                temp.persist()
                    .map_err(|source| Error::Rename { path, source })?;
            }
            let sha = sha.map(checksum::Sha256::finish);
            Ok((n, t.elapsed().as_secs_f64(), cpu.seconds(), sha))
        },
    );
    observer.stopped(rt.ctx());
    let (bytes, secs, cpu, sha) = copied?;
    Ok(Outcome::copy(raw_stats(bytes, secs, cpu), None, sha))
}

/// The error of a raw send that failed, or that a framed receiver refused.
fn raw_failed(e: RawError) -> Error {
    match e {
        RawError::Framed { said } => Error::ReceiverFramed { said },
        RawError::Channel(e) => Error::RawChannel(e),
    }
}
