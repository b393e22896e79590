//! Crafted connections at setup: garbage, wrong magic, version, uuid,
//! channel ids and counts, extra and silent connections. Each is a clear
//! error, never a panic or a hang.

mod common;

use std::time::Duration;

use common::*;
use transit_channel::{io as chio, Channel};
use transit_multifd::wire::{Record, WireError};
use transit_multifd::{
    Accepted, ChannelId, Destination, Error, Payload, Receiver, RecvConfig, SendConfig, Sender,
    SourceImage,
};

fn receiver() -> Receiver {
    Receiver::new(
        RecvConfig {
            handshake_timeout: Some(Duration::from_millis(500)),
            ..RecvConfig::default()
        },
        Destination::Memory { prefault: false },
    )
}

/// Feed `bytes` on a new connection and return the receiver's verdict.
fn accept_bytes(
    rx: &mut Receiver,
    bytes: &[u8],
) -> (transit_multifd::Result<Accepted>, Box<dyn Channel>) {
    let (mut a, mut b) = unix_pairs(1);
    let mut peer = a.pop().unwrap();
    chio::write_all(&mut peer, bytes).unwrap();
    (rx.accept_channel(b.pop().unwrap()), peer)
}

fn wire_err(e: &Error) -> &WireError {
    match e {
        Error::Protocol { source, .. } => source,
        other => panic!("not a protocol error: {other}"),
    }
}

#[test]
fn corrupt_magic_is_not_a_multifd_connection() {
    let mut rx = receiver();
    let (r, _) = accept_bytes(&mut rx, &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
    let e = r.unwrap_err();
    assert!(matches!(
        wire_err(&e),
        WireError::UnknownConnection { found: 0xdead_beef }
    ));
    assert_eq!(e.channel(), Some(ChannelId::Unclassified));
    assert!(e.to_string().contains("not a multifd connection"), "{e}");
}

#[test]
fn an_http_request_is_refused_and_named() {
    let mut rx = receiver();
    let (r, _) = accept_bytes(&mut rx, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let e = r.unwrap_err();
    assert!(e.to_string().contains("HTTP request"), "{e}");
    // The receiver still accepts a good session afterwards.
    let h = header(1, 8192);
    let (r, _) = accept_bytes(&mut rx, &h.encode());
    assert_eq!(r.unwrap(), Accepted::Main);
}

#[test]
fn wrong_version_is_refused_and_the_sender_is_told() {
    let mut rx = receiver();
    let mut bytes = header(1, 8192).encode();
    // Version 4 (no rejoining channels) is no longer spoken.
    bytes[4..8].copy_from_slice(&4u32.to_be_bytes());
    let (r, mut peer) = accept_bytes(&mut rx, &bytes);
    let e = r.unwrap_err();
    assert!(matches!(
        wire_err(&e),
        WireError::Version {
            found: 4,
            supported: 5
        }
    ));
    match read_record(&mut *peer) {
        Some(Record::Error { message, .. }) => assert!(message.contains("version 4"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_page_channel_of_another_session_is_refused() {
    let mut rx = receiver();
    let h = header(1, 8192);
    accept_bytes(&mut rx, &h.encode()).0.unwrap();
    let mut other = h;
    other.uuid = [0x22; 16];
    let (r, _) = accept_bytes(&mut rx, &init(&other, 0));
    let e = r.unwrap_err();
    assert!(matches!(wire_err(&e), WireError::UuidMismatch { .. }));
    assert!(!rx.is_ready());
    // The right one still fits.
    assert_eq!(
        accept_bytes(&mut rx, &init(&h, 0)).0.unwrap(),
        Accepted::Page(0)
    );
    assert!(rx.is_ready());
}

#[test]
fn early_page_channels_of_another_session_are_rejected_when_main_arrives() {
    let mut rx = receiver();
    let h = header(1, 8192);
    let mut other = h;
    other.uuid = [0x33; 16];
    let _keep1 = accept_bytes(&mut rx, &init(&other, 0));
    let _keep2 = accept_bytes(&mut rx, &init(&h, 0));
    accept_bytes(&mut rx, &h.encode()).0.unwrap();
    assert!(rx.is_ready());
    let rejected = rx.take_rejected();
    assert_eq!(rejected.len(), 1);
    assert!(matches!(
        wire_err(&rejected[0]),
        WireError::UuidMismatch { .. }
    ));
}

#[test]
fn expected_uuid_is_enforced() {
    let mut rx = Receiver::new(
        RecvConfig {
            expected_uuid: Some([9; 16]),
            ..RecvConfig::default()
        },
        Destination::Memory { prefault: false },
    );
    let (r, _) = accept_bytes(&mut rx, &header(1, 8192).encode());
    assert!(matches!(
        wire_err(&r.unwrap_err()),
        WireError::UuidMismatch { .. }
    ));
}

#[test]
fn duplicate_channel_id_breaks_the_session_and_tells_the_sender() {
    let mut rx = receiver();
    let h = header(2, 8192);
    let (r, mut main_peer) = accept_bytes(&mut rx, &h.encode());
    r.unwrap();
    let _p = accept_bytes(&mut rx, &init(&h, 1));
    let (r, _) = accept_bytes(&mut rx, &init(&h, 1));
    let e = r.unwrap_err();
    assert!(matches!(
        wire_err(&e),
        WireError::DuplicateChannel { id: 1 }
    ));
    assert_eq!(e.channel(), Some(ChannelId::Page(1)));
    match read_record(&mut *main_peer) {
        Some(Record::Error { message, .. }) => assert!(message.contains("duplicate"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Every later call fails the same way.
    assert!(rx.accept_channel(unix_pairs(1).1.pop().unwrap()).is_err());
    assert!(rx.run().is_err());
}

#[test]
fn duplicate_ids_before_main_are_caught_too() {
    let mut rx = receiver();
    let h = header(2, 8192);
    let _p = accept_bytes(&mut rx, &init(&h, 0));
    let (r, _) = accept_bytes(&mut rx, &init(&h, 0));
    assert!(matches!(
        wire_err(&r.unwrap_err()),
        WireError::DuplicateChannel { id: 0 }
    ));
}

#[test]
fn channel_id_out_of_range() {
    let mut rx = receiver();
    let h = header(2, 8192);
    accept_bytes(&mut rx, &h.encode()).0.unwrap();
    // id == channels is out of range (QEMU's off-by-one accepted it).
    let (r, _) = accept_bytes(&mut rx, &init(&h, 2));
    let e = r.unwrap_err();
    assert!(matches!(
        wire_err(&e),
        WireError::ChannelIdOutOfRange { id: 2, channels: 2 }
    ));
}

#[test]
fn channel_id_out_of_range_arriving_before_main() {
    let mut rx = receiver();
    let h = header(2, 8192);
    let _p = accept_bytes(&mut rx, &init(&h, 5));
    let (r, _) = accept_bytes(&mut rx, &h.encode());
    assert!(matches!(
        wire_err(&r.unwrap_err()),
        WireError::ChannelIdOutOfRange { id: 5, .. }
    ));
}

#[test]
fn channel_count_mismatch_fails_both_sides() {
    let (mut send, recv) = unix_pairs(3);
    let rx = std::thread::spawn(move || {
        let mut rx = Receiver::new(
            RecvConfig {
                expected_channels: Some(4),
                ..RecvConfig::default()
            },
            Destination::Memory { prefault: false },
        );
        let mut first = None;
        for ch in recv {
            if let Err(e) = rx.accept_channel(ch) {
                first.get_or_insert(e);
            }
        }
        first
    });
    let main = send.remove(0);
    let err = bounded(30, move || {
        let img = SourceImage::from_vec(vec![1; 8192]);
        Sender::new(SendConfig::default(), Payload::Image(img), main, send).unwrap_err()
    });
    let rerr = rx.join().unwrap().expect("receiver error");
    assert!(matches!(
        wire_err(&rerr),
        WireError::ChannelCountMismatch {
            found: 2,
            expected: 4
        }
    ));
    assert!(err.to_string().contains("channel count mismatch"), "{err}");
}

#[test]
fn an_extra_connection_is_refused() {
    let mut rx = receiver();
    let h = header(1, 8192);
    let _m = accept_bytes(&mut rx, &h.encode());
    let _p = accept_bytes(&mut rx, &init(&h, 0));
    assert!(rx.is_ready());
    let (r, _) = accept_bytes(&mut rx, &init(&h, 0));
    assert!(matches!(
        wire_err(&r.unwrap_err()),
        WireError::ExtraConnection { channels: 1 }
    ));
}

#[test]
fn a_silent_connection_times_out() {
    let mut rx = receiver();
    let (_peer, mut b) = unix_pairs(1);
    let e = bounded(10, move || rx.accept_channel(b.pop().unwrap()).unwrap_err());
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
}

#[test]
fn a_truncated_session_header_is_an_eof_error() {
    let mut rx = receiver();
    let (mut a, mut b) = unix_pairs(1);
    chio::write_all(&mut a[0], &header(1, 8192).encode()[..20]).unwrap();
    drop(a);
    let e = rx.accept_channel(b.pop().unwrap()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Channel {
                id: ChannelId::Main,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("bytes missing"), "{e}");
}

#[test]
fn a_bad_header_field_is_refused() {
    let mut rx = receiver();
    let mut h = header(1, 8192);
    h.page_size = 3000;
    let (r, _) = accept_bytes(&mut rx, &h.encode());
    assert!(matches!(
        wire_err(&r.unwrap_err()),
        WireError::BadPageSize(3000)
    ));
    let mut bytes = header(1, 8192).encode();
    bytes[41] = 7; // compression method 7
    let (r, _) = accept_bytes(&mut rx, &bytes);
    assert!(matches!(
        wire_err(&r.unwrap_err()),
        WireError::UnknownCompression(7)
    ));
}

/// A sender whose main channel is gone before the session header (the
/// peer closed it) says why on its page channels: a peer holding one of
/// them (a `--raw` receiver taking plain bytes) reads an Error record, not
/// an end of file it could take for an empty transfer.
#[test]
fn a_sender_that_cannot_start_says_so_on_its_page_channels() {
    let (mut send, recv) = unix_pairs(3);
    let mut recv = recv.into_iter();
    drop(recv.next()); // the main channel's peer: gone
    let mut page_peers: Vec<Box<dyn Channel>> = recv.collect();
    let main = send.remove(0);
    let source = transit_multifd::SourceImage::generate(&spec(1 << 20, 0.5, 1)).unwrap();
    let r = transit_multifd::Sender::new(
        transit_multifd::SendConfig::default(),
        transit_multifd::Payload::Image(source),
        main,
        send,
    );
    assert!(r.is_err());
    drop(r);
    for p in &mut page_peers {
        match read_record(&mut **p) {
            Some(Record::Error { message, .. }) => {
                assert!(message.contains("gave up"), "{message}")
            }
            other => panic!("expected an error record, got {other:?}"),
        }
    }
}
