//! TLS over fake channels that answer `WouldBlock` before every byte and
//! move one byte per call (the `ScriptedChannel::trickle` pattern, as a
//! pipe between two ends), through the handshake, a transfer both ways that
//! crosses record boundaries, and bye. Both ends run step by step on one
//! thread.

mod tls_util;

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tls_util::{pattern, Setup};
use transit_channel::tls::TlsChannel;
use transit_channel::{
    Channel, Condition, Error, Features, ReadFlags, Readiness, Result, WatchFds, WatchSource,
    WriteFlags,
};

#[derive(Default)]
struct Wire {
    bytes: VecDeque<u8>,
    writer_closed: bool,
}

/// Counts of what one end did.
#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    would_block: usize,
    bytes_moved: usize,
    calls_moving_more_than_one: usize,
}

/// One end of an in-memory pipe that answers `WouldBlock` before every
/// byte, in both directions.
struct Trickle {
    name: String,
    rx: Arc<Mutex<Wire>>,
    tx: Arc<Mutex<Wire>>,
    block_read: bool,
    block_write: bool,
    ready: Readiness,
    stats: Arc<Mutex<Stats>>,
}

fn trickle_pair() -> (Trickle, Trickle, Arc<Mutex<Stats>>) {
    let (w1, w2) = (Arc::default(), Arc::default());
    let stats = Arc::new(Mutex::new(Stats::default()));
    let end = |name: &str, rx: &Arc<Mutex<Wire>>, tx: &Arc<Mutex<Wire>>| Trickle {
        name: name.to_owned(),
        rx: Arc::clone(rx),
        tx: Arc::clone(tx),
        block_read: true,
        block_write: true,
        ready: Readiness::always(Condition::IN | Condition::OUT),
        stats: Arc::clone(&stats),
    };
    let a = end("trickle-client", &w1, &w2);
    let b = end("trickle-server", &w2, &w1);
    (a, b, stats)
}

impl Trickle {
    fn count(&self, moved: Option<usize>) {
        let mut s = self.stats.lock().expect("stats");
        match moved {
            None => s.would_block += 1,
            Some(n) => {
                s.bytes_moved += n;
                if n > 1 {
                    s.calls_moving_more_than_one += 1;
                }
            }
        }
    }
}

impl Channel for Trickle {
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn features(&self) -> Features {
        Features::empty()
    }
    fn readv(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        _fds: Option<&mut Vec<OwnedFd>>,
        _flags: ReadFlags,
    ) -> Result<usize> {
        self.block_read = !self.block_read;
        if !self.block_read {
            self.count(None);
            return Err(Error::WouldBlock);
        }
        let mut wire = self.rx.lock().expect("wire");
        let Some(buf) = bufs.iter_mut().find(|b| !b.is_empty()) else {
            return Ok(0);
        };
        match wire.bytes.pop_front() {
            Some(b) => {
                buf[0] = b;
                drop(wire);
                self.count(Some(1));
                Ok(1)
            }
            None if wire.writer_closed => Ok(0),
            None => {
                drop(wire);
                self.count(None);
                Err(Error::WouldBlock)
            }
        }
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        _fds: &[BorrowedFd<'_>],
        _flags: WriteFlags,
    ) -> Result<usize> {
        self.block_write = !self.block_write;
        if !self.block_write {
            self.count(None);
            return Err(Error::WouldBlock);
        }
        let Some(buf) = bufs.iter().find(|b| !b.is_empty()) else {
            return Ok(0);
        };
        self.tx.lock().expect("wire").bytes.push_back(buf[0]);
        self.count(Some(1));
        Ok(1)
    }
    fn set_blocking(&mut self, _blocking: bool) -> Result<()> {
        Ok(())
    }
    fn is_blocking(&self) -> bool {
        false
    }
    fn close(&mut self) -> Result<()> {
        self.tx.lock().expect("wire").writer_closed = true;
        Ok(())
    }
    fn watch_source(&self) -> WatchSource {
        WatchSource {
            fds: WatchFds::None,
            ready: self.ready.clone(),
            name: self.name.clone(),
        }
    }
}

/// One side's job: write `send` (retrying with the same bytes after
/// `WouldBlock`), read `expect_len` bytes, then bye and read end of file.
struct Side {
    tls: TlsChannel,
    send: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    want: usize,
    bye_done: bool,
    eof: bool,
}

impl Side {
    fn step(&mut self) {
        if self.sent < self.send.len() {
            match self.tls.writev(
                &[IoSlice::new(&self.send[self.sent..])],
                &[],
                WriteFlags::empty(),
            ) {
                Ok(n) => self.sent += n,
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("{} write: {e}", self.tls.name()),
            }
        }
        if self.got.len() < self.want {
            let mut buf = [0u8; 4096];
            match self
                .tls
                .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
            {
                Ok(0) => panic!("{}: early end of file", self.tls.name()),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("{} read: {e}", self.tls.name()),
            }
            return;
        }
        if self.sent == self.send.len() && !self.bye_done {
            match self.tls.bye() {
                Ok(()) => self.bye_done = true,
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("{} bye: {e}", self.tls.name()),
            }
        }
        if self.bye_done && !self.eof {
            let mut buf = [0u8; 16];
            match self
                .tls
                .readv(&mut [IoSliceMut::new(&mut buf)], None, ReadFlags::empty())
            {
                Ok(0) => self.eof = true,
                Ok(n) => panic!("{}: {n} bytes after the data", self.tls.name()),
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("{} final read: {e}", self.tls.name()),
            }
        }
    }

    fn done(&self) -> bool {
        self.eof
    }
}

#[test]
fn trickling_channels_carry_handshake_data_and_bye() {
    let setup = Setup::new("trickle");
    let (a, b, stats) = trickle_pair();
    let up = pattern(40_000, 11); // three records
    let down = pattern(3_000, 12);
    let mut client = Side {
        tls: TlsChannel::client(Box::new(a), setup.client_creds(), "localhost").expect("client"),
        send: up.clone(),
        sent: 0,
        got: Vec::new(),
        want: down.len(),
        bye_done: false,
        eof: false,
    };
    let mut server = Side {
        tls: TlsChannel::server(Box::new(b), setup.server_creds(), None).expect("server"),
        send: down.clone(),
        sent: 0,
        got: Vec::new(),
        want: up.len(),
        bye_done: false,
        eof: false,
    };
    let mut steps = 0u64;
    while !(client.done() && server.done()) {
        steps += 1;
        assert!(steps < 5_000_000, "no progress after {steps} steps");
        client.step();
        server.step();
    }
    assert!(client.tls.is_handshake_complete() && server.tls.is_handshake_complete());
    assert!(server.got == up, "client -> server data differs");
    assert!(client.got == down, "server -> client data differs");
    // The ends really trickled: one byte per call, a WouldBlock before each.
    let stats = *stats.lock().expect("stats");
    assert_eq!(stats.calls_moving_more_than_one, 0, "{stats:?}");
    assert!(stats.bytes_moved > 2 * (up.len() + down.len()), "{stats:?}");
    assert!(stats.would_block >= stats.bytes_moved, "{stats:?}");
}
