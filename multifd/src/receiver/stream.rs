//! Stream mode on the receiving side: the bounded reorder window shared by
//! the channel threads and the writer thread that puts chunks in order
//! into the sink.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Ctx, Error, Stage};
use crate::progress::Progress;
use crate::session::{lock, Failure, Wake};
use crate::wire::WireError;

/// Chunks a channel may hold (queued or being filled) in stream mode.
pub(super) const STREAM_DEPTH: usize = 2;

pub(super) struct Chunk {
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) data: Option<Vec<u8>>,
}

pub(super) struct StreamState {
    pub(super) queues: Vec<VecDeque<Chunk>>,
    pub(super) free: Vec<Vec<Vec<u8>>>,
    pub(super) done: Vec<bool>,
    /// Channel `i`'s thread waits at the SYNC barrier (set by the thread,
    /// cleared for all by the barrier when it completes).
    pub(super) at_barrier: Vec<bool>,
    /// Channel `i`'s thread waits in [`StreamShared::reserve`] for the
    /// writer to take one of its chunks.
    pub(super) blocked: Vec<bool>,
    pub(super) in_use: u64,
}

/// The stream reorder window: per channel a queue of at most
/// [`STREAM_DEPTH`] chunks and a pool of as many buffers.
pub(super) struct StreamShared {
    pub(super) st: Mutex<StreamState>,
    pub(super) cv: Condvar,
    pub(super) failure: Arc<Failure>,
    pub(super) progress: Arc<Progress>,
}

impl Wake for StreamShared {
    fn wake(&self) {
        let _g = lock(&self.st);
        self.cv.notify_all();
    }
}

impl StreamShared {
    /// Wait for room in channel `i`'s queue (and a buffer when `data`).
    /// While it waits the channel counts as blocked, so the writer can
    /// tell a wait that will end from a deadlock (see [`write_stream`]).
    pub(super) fn reserve(&self, i: usize, data: bool) -> Option<Option<Vec<u8>>> {
        let mut st = lock(&self.st);
        let got = loop {
            if self.failure.is_failed() {
                break None;
            }
            if st.queues[i].len() < STREAM_DEPTH {
                if !data {
                    break Some(None);
                }
                if let Some(b) = st.free[i].pop() {
                    st.in_use += 1;
                    self.progress.buffers_in_use(st.in_use);
                    break Some(Some(b));
                }
            }
            if !st.blocked[i] {
                st.blocked[i] = true;
                self.cv.notify_all();
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        st.blocked[i] = false;
        got
    }

    /// Channel `i`'s thread is about to wait at the SYNC barrier.
    pub(super) fn enter_barrier(&self, i: usize) {
        lock(&self.st).at_barrier[i] = true;
        self.cv.notify_all();
    }

    /// The barrier completed: every channel thread goes on (called by the
    /// barrier, under its lock).
    pub(super) fn barrier_done(&self) {
        lock(&self.st).at_barrier.fill(false);
    }

    pub(super) fn push(&self, i: usize, c: Chunk) {
        lock(&self.st).queues[i].push_back(c);
        self.cv.notify_all();
    }

    pub(super) fn finish_channel(&self, i: usize) {
        lock(&self.st).done[i] = true;
        self.cv.notify_all();
    }
}

/// The stream writer thread: write chunks in offset order; returns the
/// sink and the stream length.
pub(super) fn write_stream(
    s: Arc<StreamShared>,
    mut sink: Box<dyn Write + Send>,
    ctxs: Vec<Ctx>,
) -> (Box<dyn Write + Send>, u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut next = 0u64;
    loop {
        let (i, chunk) = {
            let mut st = lock(&s.st);
            loop {
                if s.failure.is_failed() {
                    return (sink, next);
                }
                let mut found = None;
                // No channel can still bring the chunk at `next` by
                // reading on: each holds a later chunk (chunks come in
                // order per channel), is done, or waits at the barrier.
                let mut stuck = true;
                let mut finished = true;
                let mut at_barrier = false;
                let mut blocked = false;
                for (i, q) in st.queues.iter().enumerate() {
                    blocked |= st.blocked[i];
                    match q.front() {
                        Some(c) if c.offset == next => {
                            found = Some(i);
                            break;
                        }
                        Some(c) if c.offset < next => {
                            let e = WireError::StreamOrder {
                                offset: c.offset,
                                expected: next,
                            };
                            let err = ctxs[i].proto(Stage::RecvPages, e);
                            drop(st);
                            s.failure.fail(err, true);
                            return (sink, next);
                        }
                        Some(_) => finished = false,
                        None if st.done[i] => {}
                        None if st.at_barrier[i] => {
                            at_barrier = true;
                            finished = false;
                        }
                        None => {
                            stuck = false;
                            finished = false;
                        }
                    }
                }
                // A channel waiting at the barrier may bring `next` once
                // the barrier completes, which needs every channel there;
                // one blocked on its full queue (which only this thread
                // empties, after `next`) never comes: a deadlock the
                // peer made, so fail rather than wait.
                if at_barrier && !blocked {
                    stuck = false;
                }
                if let Some(i) = found {
                    let c = st.queues[i].pop_front();
                    if let Some(c) = c {
                        break (i, c);
                    }
                }
                if finished {
                    drop(st);
                    if let Err(e) = sink.flush() {
                        s.failure
                            .fail(Error::data("flush the stream destination", e), true);
                    }
                    return (sink, next);
                }
                if stuck {
                    // Every channel holds a later chunk or is done: the
                    // chunk at `next` will never come.
                    let (i, offset) = st
                        .queues
                        .iter()
                        .enumerate()
                        .filter_map(|(i, q)| q.front().map(|c| (i, c.offset)))
                        .min_by_key(|x| x.1)
                        .unwrap_or((0, next));
                    let err = ctxs[i].proto(
                        Stage::RecvPages,
                        WireError::StreamOrder {
                            offset,
                            expected: next,
                        },
                    );
                    drop(st);
                    s.failure.fail(err, true);
                    return (sink, next);
                }
                st = s.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        // Let the channel read on while we write.
        s.cv.notify_all();
        let len = chunk.len as usize;
        let r = match &chunk.data {
            Some(b) => sink.write_all(&b[..len]),
            None => {
                let mut left = len;
                let mut r = Ok(());
                while left > 0 && r.is_ok() {
                    let n = left.min(ZEROS.len());
                    r = sink.write_all(&ZEROS[..n]);
                    left -= n;
                }
                r
            }
        };
        if let Some(b) = chunk.data {
            let mut st = lock(&s.st);
            st.free[i].push(b);
            st.in_use -= 1;
            drop(st);
            s.cv.notify_all();
        }
        if let Err(e) = r {
            s.failure
                .fail(Error::data("write the stream destination", e), true);
            return (sink, next);
        }
        next += len as u64;
    }
}
