//! The async "all" helpers on a `MainContext`: WouldBlock awaits readiness,
//! QEMU's EOF rules, vectored forms.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use transit_channel::io::{
    read_all_async, read_all_eof_async, readv_all_async, write_all_async, writev_all_async,
};
use transit_channel::main_loop::MainContext;
use transit_channel::{
    Channel, Error, Features, ReadFlags, Readiness, Result, WatchFds, WatchSource, WriteFlags,
};

/// A minimal non-blocking channel over a UNIX stream socket.
struct Stream {
    sock: UnixStream,
    name: String,
}

impl Stream {
    fn pair() -> (Stream, Stream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (
            Stream {
                sock: a,
                name: "stream-a".into(),
            },
            Stream {
                sock: b,
                name: "stream-b".into(),
            },
        )
    }
}

impl Channel for Stream {
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
        _fds: Option<&mut Vec<OwnedFd>>,
        _flags: ReadFlags,
    ) -> Result<usize> {
        self.sock
            .read_vectored(bufs)
            .map_err(|e| Error::os(&self.name, "read", e))
    }
    fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        _fds: &[BorrowedFd<'_>],
        _: WriteFlags,
    ) -> Result<usize> {
        self.sock
            .write_vectored(bufs)
            .map_err(|e| Error::os(&self.name, "write", e))
    }
    fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        self.sock
            .set_nonblocking(!blocking)
            .map_err(|e| Error::os(&self.name, "set blocking", e))
    }
    fn is_blocking(&self) -> bool {
        false
    }
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    fn watch_source(&self) -> WatchSource {
        WatchSource {
            fds: WatchFds::One(self.sock.as_raw_fd()),
            ready: Readiness::new(),
            name: self.name.clone(),
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_large_transfer_waits_for_readiness_in_both_directions() {
    let ctx = MainContext::new().unwrap();
    let (mut tx, mut rx) = Stream::pair();
    // Far more than a socket buffer: both sides hit WouldBlock.
    let data = pattern(4 << 20);
    let expect = data.clone();
    let c2 = ctx.clone();
    let writer = ctx.spawn_local(async move {
        let (head, tail) = data.split_at(1000);
        let mut bufs = [IoSlice::new(head), IoSlice::new(tail)];
        writev_all_async(&c2, &mut tx, &mut bufs).await
    });
    let mut got = vec![0u8; expect.len()];
    let (a, b) = got.split_at_mut(12345);
    let mut bufs = [IoSliceMut::new(a), IoSliceMut::new(b)];
    ctx.block_on(readv_all_async(&ctx, &mut rx, &mut bufs))
        .unwrap();
    ctx.block_on(writer).unwrap();
    assert!(got == expect, "data corrupted in transit");
}

#[test]
fn clean_eof_before_the_first_byte_is_false() {
    let ctx = MainContext::new().unwrap();
    let (tx, mut rx) = Stream::pair();
    drop(tx);
    let mut buf = [0u8; 4];
    assert!(!ctx
        .block_on(read_all_eof_async(&ctx, &mut rx, &mut buf))
        .unwrap());
}

#[test]
fn eof_in_the_middle_says_how_much_was_missing() {
    let ctx = MainContext::new().unwrap();
    let (mut tx, mut rx) = Stream::pair();
    let c2 = ctx.clone();
    let writer = ctx.spawn_local(async move {
        write_all_async(&c2, &mut tx, b"abc").await.unwrap();
        drop(tx);
    });
    let mut buf = [0u8; 10];
    let err = ctx
        .block_on(read_all_eof_async(&ctx, &mut rx, &mut buf))
        .unwrap_err();
    ctx.block_on(writer);
    match err {
        Error::UnexpectedEof {
            channel,
            expected,
            missing,
            ..
        } => assert_eq!((channel.as_str(), expected, missing), ("stream-b", 10, 7)),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn read_all_treats_eof_before_any_data_as_an_error() {
    let ctx = MainContext::new().unwrap();
    let (tx, mut rx) = Stream::pair();
    drop(tx);
    let mut buf = [0u8; 2];
    let err = ctx
        .block_on(read_all_async(&ctx, &mut rx, &mut buf))
        .unwrap_err();
    match err {
        Error::UnexpectedEof { op, missing, .. } => {
            assert_eq!((op, missing), ("read_all before any data", 2))
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn a_reader_waiting_for_data_lets_other_sources_run() {
    let ctx = MainContext::new().unwrap();
    let (mut tx, mut rx) = Stream::pair();
    // The reader starts first and must wait; a timer later writes.
    let ticks = std::rc::Rc::new(std::cell::Cell::new(0));
    let t = ticks.clone();
    ctx.timeout_add(std::time::Duration::from_millis(5), move || {
        t.set(t.get() + 1);
        tx.sock.write_all(b"late").unwrap();
        transit_channel::ControlFlow::Remove
    });
    let mut buf = [0u8; 4];
    ctx.block_on(read_all_async(&ctx, &mut rx, &mut buf))
        .unwrap();
    assert_eq!(&buf, b"late");
    assert_eq!(ticks.get(), 1);
}
