//! Malformed barriers from a hostile sender end the session with a
//! protocol error naming the channel that made the barrier impossible:
//! they never leave the receiver waiting for a party that cannot come,
//! even after the peer closed every socket (issue 14, item 6).

mod common;

use common::*;
use transit_channel::{io as chio, Shutdown};
use transit_multifd::wire::{PacketFlags, Record, Totals, WireError};
use transit_multifd::{ChannelId, Destination, Error, RecvConfig, Stage};

enum To {
    Main,
    Page(usize),
}

fn sync_rec(epoch: u32) -> Vec<u8> {
    Record::Sync { epoch }.to_bytes()
}

fn end_rec() -> Vec<u8> {
    Record::End(Totals {
        pages: 0,
        zero_pages: 0,
        bytes: 0,
        packets: 0,
        stream_len: 0,
        digest: 0,
    })
    .to_bytes()
}

/// Handshake `h`, write `script` in order, close every page channel and
/// the main channel's write side; return the receiver's error and what the
/// sender was told on the main channel.
fn run(
    h: transit_multifd::SessionHeader,
    dest: Destination,
    script: Vec<(To, Vec<u8>)>,
) -> (Error, Option<Record>) {
    let (mut send, mut recv) = unix_pairs(h.channels as usize + 1);
    recv.reverse();
    let rx = spawn_receiver(recv, RecvConfig::default(), dest);
    bounded(20, move || {
        let mut main = send.remove(0);
        raw_handshake(&mut *main, &mut send, &h);
        for (to, bytes) in script {
            let ch = match to {
                To::Main => &mut main,
                To::Page(i) => &mut send[i],
            };
            let _ = chio::write_all(ch, &bytes);
        }
        drop(send);
        let _ = main.shutdown_handle().unwrap().shutdown(Shutdown::Write);
        let err = match rx.join().unwrap() {
            Ok(_) => panic!("a broken barrier was accepted"),
            Err(e) => e,
        };
        (err, read_record(&mut *main))
    })
}

fn memory() -> Destination {
    Destination::Memory { prefault: false }
}

fn expect_barrier_error(err: &Error, told: &Option<Record>, who: ChannelId, ended: &str) {
    match err {
        Error::Protocol {
            id,
            stage: Stage::Sync,
            source: WireError::BarrierAfterEnd { ended: e, epoch: 0 },
            ..
        } if *id == who && *e == ended => {}
        other => panic!("unexpected error: {other}"),
    }
    match told {
        Some(Record::Error { message, .. }) => {
            assert!(message.contains(&who.to_string()), "{message}");
            assert!(message.contains("barrier"), "{message}");
        }
        other => panic!("the sender was not told: {other:?}"),
    }
}

#[test]
fn sync_on_one_channel_end_on_the_other() {
    let (err, told) = run(
        header(2, 16 * 4096),
        memory(),
        vec![
            (To::Page(0), control(PacketFlags::SYNC, 1, 0)),
            (To::Main, sync_rec(0)),
            (To::Page(1), control(PacketFlags::END, 1, 0)),
            (To::Main, end_rec()),
        ],
    );
    expect_barrier_error(&err, &told, ChannelId::Page(1), "END packet");
}

#[test]
fn end_on_one_channel_then_sync_on_the_other() {
    let (err, told) = run(
        header(2, 16 * 4096),
        memory(),
        vec![
            (To::Page(0), control(PacketFlags::END, 1, 0)),
            (To::Page(1), control(PacketFlags::SYNC, 1, 0)),
            (To::Main, sync_rec(0)),
        ],
    );
    expect_barrier_error(&err, &told, ChannelId::Page(0), "END packet");
}

#[test]
fn sync_on_every_channel_then_the_end_record() {
    let (err, told) = run(
        header(2, 16 * 4096),
        memory(),
        vec![
            (To::Page(0), control(PacketFlags::SYNC, 1, 0)),
            (To::Page(1), control(PacketFlags::SYNC, 1, 0)),
            (To::Main, end_rec()),
        ],
    );
    expect_barrier_error(&err, &told, ChannelId::Main, "End record");
}

/// Stream mode: channel 0 fills its reorder window with later chunks and
/// blocks, channel 1 waits at a barrier without sending the first chunk:
/// neither can ever move, so the writer fails the session.
#[test]
fn a_full_stream_window_and_a_barrier() {
    let chunk = 4096;
    let c = |n: u64| stream_chunk(n, 0, n * u64::from(chunk), chunk, true, 0);
    let (err, _told) = run(
        stream_header(2, chunk),
        Destination::Writer(Box::new(std::io::sink())),
        vec![
            (To::Page(0), c(1)),
            (To::Page(0), c(2)),
            (To::Page(0), c(3)),
            (To::Page(1), control(PacketFlags::SYNC, 1, 0)),
            (To::Main, sync_rec(0)),
        ],
    );
    match &err {
        Error::Protocol {
            id: ChannelId::Page(0),
            source: WireError::StreamOrder { expected: 0, .. },
            ..
        } => {}
        other => panic!("unexpected error: {other}"),
    }
}
