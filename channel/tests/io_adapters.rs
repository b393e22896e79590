//! `ChannelIo`: a channel as `std::io::Read` / `std::io::Write`.

use std::io::{ErrorKind, IoSlice, IoSliceMut, Read, Write};

use transit_channel::io::ChannelIo;
use transit_channel::scripted::{ReadStep, WriteStep};
use transit_channel::{BufferChannel, Channel, ScriptedChannel};

#[test]
fn read_would_block_surfaces_as_io_would_block() {
    let ch = ScriptedChannel::new().read(ReadStep::WouldBlock);
    let mut io = ChannelIo::new(ch);
    let err = io.read(&mut [0u8; 4]).expect_err("would block");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
}

#[test]
fn write_would_block_surfaces_as_io_would_block() {
    let ch = ScriptedChannel::new().write(WriteStep::WouldBlock);
    let mut io = ChannelIo::new(ch);
    let err = io.write(b"abc").expect_err("would block");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
}

#[test]
fn std_io_copy_moves_everything_through_partial_writes() {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut src = ChannelIo::new(BufferChannel::from_vec(data.clone()));
    let sink = ScriptedChannel::new()
        .write(WriteStep::Accept(1))
        .write(WriteStep::Accept(7))
        .write(WriteStep::Accept(1000));
    let log = sink.handle();
    let mut dst = ChannelIo::new(sink);
    let n = std::io::copy(&mut src, &mut dst).expect("copy");
    assert_eq!(n, data.len() as u64);
    assert_eq!(log.written(), data);
}

#[test]
fn closed_channel_maps_to_not_connected_naming_the_channel() {
    let mut ch = BufferChannel::new();
    ch.set_name("mem-1".to_owned());
    ch.close().expect("close");
    let mut io = ChannelIo::new(ch);
    let err = io.write(b"x").expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::NotConnected);
    assert!(err.to_string().contains("mem-1"), "{err}");
}

#[test]
fn read_vectored_fills_buffers_in_order() {
    let mut io = ChannelIo::new(BufferChannel::from_vec(b"abcdef".to_vec()));
    let (mut a, mut b) = ([0u8; 2], [0u8; 4]);
    let n = io
        .read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
        .expect("read");
    assert_eq!((n, &a, &b), (6, b"ab", b"cdef"));
}

#[test]
fn write_vectored_writes_buffers_in_order() {
    let mut io = ChannelIo::new(BufferChannel::new());
    let n = io
        .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
        .expect("write");
    assert_eq!(n, 4);
    assert_eq!(io.into_inner().into_inner(), b"abcd");
}

#[test]
fn eof_reads_zero() {
    let mut io = ChannelIo::new(ScriptedChannel::new().read(ReadStep::Eof));
    assert_eq!(io.read(&mut [0u8; 8]).expect("eof"), 0);
}

#[test]
fn adapter_works_over_a_borrowed_dyn_channel() {
    let mut buf = BufferChannel::new();
    {
        let dyn_ch: &mut dyn Channel = &mut buf;
        let mut io = ChannelIo::new(dyn_ch);
        io.write_all(b"borrowed").expect("write");
        io.flush().expect("flush");
        assert_eq!(io.get_ref().name(), "buffer");
    }
    assert_eq!(buf.as_slice(), b"borrowed");
}
