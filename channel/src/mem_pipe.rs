//! [`MemPipe`]: an in-process, zero-buffer pipe pair: two threads of one
//! program talk through it as through a socket pair, at the cost of one
//! memcpy and no kernel (the `buffer` row of `transit bench`, the
//! ceiling of any transport; in-process tests of code written against
//! [`Channel`]).
//!
//! It is not a transport a peer can reach. Each direction is a rendezvous: `writev` publishes the
//! writer's own buffers and waits until the reader has copied all of them
//! straight into its buffers (one copy, no intermediate ring, nothing
//! allocated per write once the segment list has grown), then returns.
//! `readv` copies from the published buffers, or waits for a writer.
//!
//! Limits: writes always wait for the reader, even in non-blocking mode
//! (use it from blocking threads, as multifd does); no fds, no `MSG_PEEK`.
//! Closing or dropping an end gives the other end EOF on read and `EPIPE`
//! on write; [`Channel::shutdown_handle`] wakes blocked threads.
//!
//! ```
//! use transit_channel::mem_pipe::MemPipe;
//! use transit_channel::{io, Channel};
//!
//! let (mut a, mut b) = MemPipe::pair();
//! let t = std::thread::spawn(move || io::write_all(&mut a, b"ping"));
//! let mut buf = [0u8; 4];
//! io::read_all(&mut b, &mut buf)?;
//! assert_eq!(&buf, b"ping");
//! t.join().unwrap()?;
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::{
    Channel, Condition, Error, Features, ReadFlags, Readiness, Result, Shutdown, ShutdownChannel,
    ShutdownHandle, WatchFds, WatchSource, WriteFlags,
};

#[derive(Default)]
struct DirState {
    /// The writer's buffers as (address, length), valid while `offered`.
    segs: Vec<(usize, usize)>,
    seg: usize,
    seg_off: usize,
    remaining: usize,
    offered: bool,
    /// No more data will come (writer closed or shut down).
    write_shut: bool,
    /// No one will read any more (reader closed or shut down).
    read_shut: bool,
}

/// One direction of a pair.
struct Dir {
    st: Mutex<DirState>,
    cv: Condvar,
    /// The reading end's readiness: IN while data is offered or at EOF;
    /// OUT always (writes wait).
    ready: Readiness,
}

impl Dir {
    fn new() -> Arc<Dir> {
        Arc::new(Dir {
            st: Mutex::new(DirState::default()),
            cv: Condvar::new(),
            ready: Readiness::always(Condition::OUT),
        })
    }

    fn lock(&self) -> MutexGuard<'_, DirState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shut_write(&self) {
        let mut st = self.lock();
        st.write_shut = true;
        self.ready.insert(Condition::IN | Condition::HUP);
        self.cv.notify_all();
    }

    fn shut_read(&self) {
        let mut st = self.lock();
        st.read_shut = true;
        self.ready.insert(Condition::IN);
        self.cv.notify_all();
    }
}

/// One end of an in-process pipe pair; see the [module docs](self).
pub struct MemPipe {
    name: String,
    rx: Arc<Dir>,
    tx: Arc<Dir>,
    blocking: bool,
    closed: bool,
}

impl std::fmt::Debug for MemPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemPipe")
            .field("name", &self.name)
            .field("closed", &self.closed)
            .finish()
    }
}

impl MemPipe {
    /// Two connected ends, named `pipe[0]` and `pipe[1]`.
    pub fn pair() -> (MemPipe, MemPipe) {
        let ab = Dir::new();
        let ba = Dir::new();
        (
            MemPipe {
                name: "pipe[0]".into(),
                rx: ba.clone(),
                tx: ab.clone(),
                blocking: true,
                closed: false,
            },
            MemPipe {
                name: "pipe[1]".into(),
                rx: ab,
                tx: ba,
                blocking: true,
                closed: false,
            },
        )
    }

    fn epipe(&self, op: &str) -> Error {
        Error::os(&self.name, op, io::Error::from_raw_os_error(libc::EPIPE))
    }
}

impl Channel for MemPipe {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn features(&self) -> Features {
        Features::SHUTDOWN
    }

    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        fds: Option<&mut Vec<OwnedFd>>,
        flags: ReadFlags,
    ) -> Result<usize> {
        crate::channel::check_read_request(self, fds.is_some(), flags)?;
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        if want == 0 {
            return Ok(0);
        }
        let dir = self.rx.clone();
        let mut st = dir.lock();
        loop {
            if st.read_shut {
                return Ok(0);
            }
            if st.offered && st.remaining > 0 {
                let mut n = 0;
                'bufs: for b in bufs.iter_mut() {
                    let mut at = 0;
                    while at < b.len() {
                        if st.seg >= st.segs.len() {
                            break 'bufs;
                        }
                        let (addr, len) = st.segs[st.seg];
                        let take = (len - st.seg_off).min(b.len() - at);
                        // SAFETY: (addr, len) is a buffer of the writer's
                        // `writev` call, which is blocked waiting on this
                        // mutex-protected offer and does not return (so the
                        // borrow of its buffers lives) until `offered` is
                        // cleared under the same mutex, which we hold.
                        let src = unsafe {
                            std::slice::from_raw_parts((addr as *const u8).add(st.seg_off), take)
                        };
                        b[at..at + take].copy_from_slice(src);
                        at += take;
                        n += take;
                        st.seg_off += take;
                        if st.seg_off == len {
                            st.seg += 1;
                            st.seg_off = 0;
                        }
                    }
                }
                st.remaining -= n;
                if st.remaining == 0 {
                    if !st.write_shut {
                        dir.ready.remove(Condition::IN);
                    }
                    dir.cv.notify_all();
                }
                return Ok(n);
            }
            if st.write_shut {
                return Ok(0);
            }
            if !self.blocking {
                return Err(Error::WouldBlock);
            }
            st = dir.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        flags: WriteFlags,
    ) -> Result<usize> {
        crate::channel::check_write_request(self, !fds.is_empty(), flags)?;
        if self.closed {
            return Err(Error::closed(&self.name));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let dir = self.tx.clone();
        let mut st = dir.lock();
        if st.read_shut || st.write_shut {
            return Err(self.epipe("write"));
        }
        st.segs.clear();
        st.segs.extend(
            bufs.iter()
                .filter(|b| !b.is_empty())
                .map(|b| (b.as_ptr() as usize, b.len())),
        );
        st.seg = 0;
        st.seg_off = 0;
        st.remaining = total;
        st.offered = true;
        dir.ready.insert(Condition::IN);
        dir.cv.notify_all();
        while st.remaining > 0 && !st.read_shut && !st.write_shut {
            st = dir.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        // Withdraw the offer before the buffers' borrow ends.
        let done = total - st.remaining;
        st.offered = false;
        st.remaining = 0;
        st.segs.clear();
        if !st.write_shut && !st.read_shut {
            dir.ready.remove(Condition::IN);
        }
        drop(st);
        if done == 0 {
            return Err(self.epipe("write"));
        }
        Ok(done)
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.blocking = blocking;
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        self.blocking
    }

    fn close(&mut self) -> Result<()> {
        if !self.closed {
            self.closed = true;
            self.tx.shut_write();
            self.rx.shut_read();
        }
        Ok(())
    }

    fn watch_source(&self) -> WatchSource {
        WatchSource {
            fds: WatchFds::None,
            ready: self.rx.ready.clone(),
            name: self.name.clone(),
        }
    }

    fn shutdown_handle(&self) -> Result<ShutdownHandle> {
        Ok(Arc::new(PipeShutdown {
            rx: self.rx.clone(),
            tx: self.tx.clone(),
        }))
    }
}

impl Drop for MemPipe {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

struct PipeShutdown {
    rx: Arc<Dir>,
    tx: Arc<Dir>,
}

impl ShutdownChannel for PipeShutdown {
    fn shutdown(&self, how: Shutdown) -> Result<()> {
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.rx.shut_read();
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.tx.shut_write();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io;

    #[test]
    fn bytes_cross_in_order_across_vectors() {
        let (mut a, mut b) = MemPipe::pair();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let t = std::thread::spawn(move || {
            let (x, y) = data.split_at(33_333);
            io::writev_all(&mut a, &mut [IoSlice::new(x), IoSlice::new(y)])
        });
        let mut got = vec![0u8; 100_000];
        for part in got.chunks_mut(7_000) {
            io::read_all(&mut b, part).unwrap();
        }
        t.join().unwrap().unwrap();
        assert_eq!(got, expect);
    }

    #[test]
    fn drop_gives_eof_and_epipe() {
        let (a, mut b) = MemPipe::pair();
        drop(a);
        let mut buf = [0u8; 4];
        assert_eq!(
            b.readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
                .unwrap(),
            0
        );
        let e = b
            .writev(&[IoSlice::new(b"x")], &[], WriteFlags::empty())
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn shutdown_wakes_a_blocked_writer() {
        let (mut a, b) = MemPipe::pair();
        let h = a.shutdown_handle().unwrap();
        let t = std::thread::spawn(move || {
            a.writev(&[IoSlice::new(b"stuck")], &[], WriteFlags::empty())
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        h.shutdown(Shutdown::Both).unwrap();
        assert!(t.join().unwrap().is_err());
        drop(b);
    }

    #[test]
    fn readiness_follows_offers() {
        let (mut a, mut b) = MemPipe::pair();
        let ws = b.watch_source();
        assert!(!ws.ready.get().contains(Condition::IN));
        let t = std::thread::spawn(move || io::write_all(&mut a, b"hi"));
        let got =
            io::wait_blocking(&ws, Condition::IN, Some(std::time::Duration::from_secs(5))).unwrap();
        assert!(got.contains(Condition::IN));
        let mut buf = [0u8; 2];
        io::read_all(&mut b, &mut buf).unwrap();
        t.join().unwrap().unwrap();
        assert_eq!(&buf, b"hi");
    }
}
