//! Stream mode on the receiving side: the bounded reorder window shared by
//! the channel threads and the writer thread that puts chunks in order
//! into the sink.
//!
//! The writer holds the stream's latest [`STREAM_HOLD`] bytes back (at
//! least its latest chunk) and writes them only once the session is
//! verified (see [`StreamEnd`]): a sink that acts on what it reads (QEMU's
//! `-incoming exec:` loading a migration stream from `transit recv
//! --output -`) never sees the whole stream of a session whose totals or
//! digest do not match. It sees a stream cut short, which it refuses,
//! instead of a corrupt one it might load. The hold is bytes, not one
//! chunk: a sender's last chunk may be a short trailer the consumer does
//! not need (QEMU's device description after its end-of-stream marker
//! came in a chunk of its own, and QEMU loaded the stream without it).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Ctx, Error, Stage};
use crate::progress::Progress;
use crate::session::{lock, Failure, Wake};
use crate::wire::WireError;

/// Chunks a channel may hold (queued or being filled) in stream mode.
pub(super) const STREAM_DEPTH: usize = 2;

/// Bytes of chunk buffers a stream session holds, at most, whatever the
/// channel count (plus one chunk: the one the writer needs next always
/// gets a buffer, so the window never deadlocks on the budget; plus what
/// the writer holds back, [`STREAM_HOLD`] and one chunk).
pub(super) const STREAM_BUDGET: usize = 64 << 20;

/// Bytes at the end of a stream the writer holds back until the session
/// is verified (at least the last chunk, whatever its size).
pub(super) const STREAM_HOLD: u64 = 4 << 20;

/// Buffers of `chunk` bytes within [`STREAM_BUDGET`] (at least one). The
/// pool also never holds more than [`STREAM_DEPTH`] buffers per channel.
pub(super) fn buffer_limit(chunk: usize) -> usize {
    (STREAM_BUDGET / chunk.max(1)).max(1)
}

pub(super) struct Chunk {
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) data: Option<Vec<u8>>,
}

pub(super) struct StreamState {
    pub(super) queues: Vec<VecDeque<Chunk>>,
    /// Buffers back from the writer, shared by every channel.
    pub(super) free: Vec<Vec<u8>>,
    pub(super) done: Vec<bool>,
    /// Channel `i`'s thread waits at the SYNC barrier (set by the thread,
    /// cleared for all by the barrier when it completes).
    pub(super) at_barrier: Vec<bool>,
    /// Channel `i`'s thread waits in [`StreamShared::reserve`] for the
    /// writer to take one of its chunks.
    pub(super) blocked: Vec<bool>,
    pub(super) in_use: u64,
    /// Buffers allocated so far (free or in use).
    pub(super) allocated: usize,
    /// Size of one buffer (the session's chunk size).
    pub(super) chunk: usize,
    /// The offset the writer needs next.
    pub(super) next: u64,
}

impl StreamState {
    /// An empty window for `n` channels and chunks of `chunk` bytes.
    pub(super) fn new(n: usize, chunk: usize) -> StreamState {
        StreamState {
            queues: (0..n)
                .map(|_| VecDeque::with_capacity(STREAM_DEPTH))
                .collect(),
            free: Vec::new(),
            done: vec![false; n],
            at_barrier: vec![false; n],
            blocked: vec![false; n],
            in_use: 0,
            allocated: 0,
            chunk,
            next: 0,
        }
    }
}

/// The stream reorder window: per channel a queue of at most
/// [`STREAM_DEPTH`] chunks; buffers from one pool for the whole session,
/// allocated as needed up to [`STREAM_BUDGET`] (a silent channel pins
/// nothing; many channels share the budget).
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
    /// Wait for room in channel `i`'s queue (and a buffer when `data`)
    /// for the chunk at `offset`. While it waits the channel counts as
    /// blocked, so the writer can tell a wait that will end from a
    /// deadlock (see [`write_stream`]).
    pub(super) fn reserve(&self, i: usize, data: bool, offset: u64) -> Option<Option<Vec<u8>>> {
        let mut st = lock(&self.st);
        let got = loop {
            if self.failure.is_failed() {
                break None;
            }
            if st.queues[i].len() < STREAM_DEPTH {
                if !data {
                    break Some(None);
                }
                // Never more than STREAM_DEPTH per channel either (as many
                // as the window can hold: the writer's next chunk still
                // finds one, since it is not in the window yet).
                // The limit counts buffers in use, not those allocated:
                // a buffer freed by the writer must not go to a later
                // chunk while the next one waits (that deadlocked once
                // every buffer held a later chunk).
                let limit = (buffer_limit(st.chunk) + usize::from(offset == st.next))
                    .min(STREAM_DEPTH * st.queues.len());
                let b = if st.in_use < limit as u64 {
                    Some(st.free.pop().unwrap_or_else(|| {
                        st.allocated += 1;
                        vec![0u8; st.chunk]
                    }))
                } else {
                    None
                };
                if let Some(b) = b {
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

    /// Give a buffer back to the pool.
    pub(super) fn release(&self, b: Vec<u8>) {
        let mut st = lock(&self.st);
        st.free.push(b);
        st.in_use -= 1;
        drop(st);
        self.cv.notify_all();
    }

    /// A buffer the writer held (no longer counted in use), written:
    /// back to the pool.
    pub(super) fn give_back(&self, b: Vec<u8>) {
        lock(&self.st).free.push(b);
        self.cv.notify_all();
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

/// What the stream writer thread leaves: the sink, the stream's length
/// (the chunks written and those held back) and the stream's last chunks,
/// held back until the session is verified ([`StreamEnd::write_tail`]).
pub(super) struct StreamEnd {
    pub(super) sink: Box<dyn Write + Send>,
    pub(super) len: u64,
    tail: VecDeque<Chunk>,
}

impl StreamEnd {
    /// The session is verified: write the held-back chunks and flush.
    pub(super) fn write_tail(&mut self) -> std::io::Result<()> {
        while let Some(c) = self.tail.pop_front() {
            write_chunk(&mut self.sink, &c)?;
        }
        self.sink.flush()
    }
}

/// The chunks the writer holds back: the stream's latest, at least
/// [`STREAM_HOLD`] bytes of them once the stream is that long.
#[derive(Default)]
struct Hold {
    chunks: VecDeque<Chunk>,
    bytes: u64,
}

impl Hold {
    fn push(&mut self, c: Chunk) {
        self.bytes += u64::from(c.len);
        self.chunks.push_back(c);
    }

    /// The oldest chunk, if the others still hold [`STREAM_HOLD`] bytes.
    fn release(&mut self) -> Option<Chunk> {
        let first = u64::from(self.chunks.front()?.len);
        if self.bytes - first < STREAM_HOLD {
            return None;
        }
        self.bytes -= first;
        self.chunks.pop_front()
    }
}

/// Write one chunk's bytes (zeros for a chunk without data).
fn write_chunk(sink: &mut Box<dyn Write + Send>, c: &Chunk) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let len = c.len as usize;
    match &c.data {
        Some(b) => sink.write_all(&b[..len]),
        None => {
            let mut left = len;
            while left > 0 {
                let n = left.min(ZEROS.len());
                sink.write_all(&ZEROS[..n])?;
                left -= n;
            }
            Ok(())
        }
    }
}

/// The stream writer thread: write chunks in offset order, each once the
/// chunks after it hold [`STREAM_HOLD`] bytes (the stream's last ones are
/// left for [`StreamEnd::write_tail`]).
pub(super) fn write_stream(
    s: Arc<StreamShared>,
    sink: Box<dyn Write + Send>,
    ctxs: Vec<Ctx>,
) -> StreamEnd {
    let mut end = StreamEnd {
        sink,
        len: 0,
        tail: VecDeque::new(),
    };
    let sink = &mut end.sink;
    let mut next = 0u64;
    let mut held = Hold::default();
    let written = |next: u64, held: &Hold| next - held.bytes;
    loop {
        let (_, chunk) = {
            let mut st = lock(&s.st);
            loop {
                if s.failure.is_failed() {
                    end.len = written(next, &held);
                    return end;
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
                            end.len = written(next, &held);
                            return end;
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
                    end.len = next;
                    end.tail = held.chunks;
                    return end;
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
                    end.len = written(next, &held);
                    return end;
                }
                st = s.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        // The chunk is taken: the window moves on past it (its buffer no
        // longer counts against the window's budget while it is held).
        next += u64::from(chunk.len);
        {
            let mut st = lock(&s.st);
            st.next = next;
            if chunk.data.is_some() {
                st.in_use -= 1;
                s.progress.buffers_in_use(st.in_use);
            }
        }
        // Let the channel read on while we write.
        s.cv.notify_all();
        // Hold this one; write those held back before it that the hold
        // no longer needs.
        held.push(chunk);
        while let Some(prev) = held.release() {
            let r = write_chunk(sink, &prev);
            if let Some(b) = prev.data {
                s.give_back(b);
            }
            if let Err(e) = r {
                s.failure
                    .fail(Error::data("write the stream destination", e), true);
                end.len = written(next, &held) - u64::from(prev.len);
                return end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn window(n: usize, chunk: usize) -> Arc<StreamShared> {
        Arc::new(StreamShared {
            st: Mutex::new(StreamState::new(n, chunk)),
            cv: Condvar::new(),
            failure: Arc::new(Failure::default()),
            progress: Arc::new(Progress::new(n as u32)),
        })
    }

    /// 256 channels of 16 MiB chunks used to pin 2 buffers each (8 GiB);
    /// now the whole session holds at most the budget plus the chunk the
    /// writer needs next.
    #[test]
    fn stream_buffers_are_bounded_per_session() {
        let (n, chunk) = (256, 16 << 20);
        let w = window(n, chunk);
        let limit = buffer_limit(chunk);
        assert_eq!(limit, 4);
        // Later chunks (not the writer's next) on as many channels as the
        // budget allows.
        let held: Vec<Vec<u8>> = (0..limit)
            .map(|i| {
                w.reserve(i, true, ((i + 1) * chunk) as u64)
                    .expect("not failed")
                    .expect("a buffer")
            })
            .collect();
        // One more later chunk waits for the budget.
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.reserve(limit, true, (64 * chunk) as u64));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !t.is_finished(),
            "a buffer beyond the budget was handed out"
        );
        // The chunk the writer needs next always gets one.
        let next = w
            .reserve(100, true, 0)
            .expect("not failed")
            .expect("a buffer");
        assert_eq!(lock(&w.st).allocated, limit + 1);
        assert!((limit + 1) * chunk <= STREAM_BUDGET + chunk);
        // The next chunk's buffer back does not go to a later chunk: the
        // budget counts buffers in use (else a later chunk could take the
        // one kept for the writer's next, and the window deadlock).
        w.release(next);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !t.is_finished(),
            "a later chunk took the buffer kept for the next one"
        );
        let again = w.reserve(101, true, 0).expect("not failed");
        assert!(again.is_some(), "the next chunk found no buffer");
        w.release(again.unwrap());
        // A later chunk's buffer back lets the waiting chunk in.
        let mut held = held;
        w.release(held.pop().unwrap());
        let got = t.join().expect("no panic").expect("not failed");
        assert!(got.is_some());
        assert_eq!(lock(&w.st).allocated, limit + 1);
        drop(held);
    }

    /// A silent session pins no buffer.
    #[test]
    fn no_buffer_before_a_chunk_comes() {
        let w = window(256, 16 << 20);
        assert_eq!(lock(&w.st).allocated, 0);
    }
}
