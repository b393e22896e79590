//! Crafted page packets after a good handshake: each malformed packet is a
//! protocol error on the receiver that names the page channel, and the
//! sender is told why on the main channel. Nothing panics or hangs.

mod common;

use common::*;
use transit_channel::io as chio;
use transit_multifd::wire::{PacketFlags, PacketHeader, Record, WireError, PACKET_HEADER_LEN};
use transit_multifd::{ChannelId, Destination, Error, RecvConfig};

const SIZE: u64 = 64 * 4096;

fn packet(flags: PacketFlags, normal: u32, zero: u32, payload_len: u32, epoch: u32) -> Vec<u8> {
    let mut b = vec![0u8; PACKET_HEADER_LEN];
    PacketHeader {
        flags,
        packet_num: 1,
        normal,
        zero,
        payload_len,
        epoch,
    }
    .encode_into(&mut b);
    b
}

fn data_packet(offsets: &[u64], normal: u32, payload: u32) -> Vec<u8> {
    let mut b = packet(
        PacketFlags::DATA,
        normal,
        offsets.len() as u32 - normal,
        payload,
        0,
    );
    for o in offsets {
        b.extend_from_slice(&o.to_be_bytes());
    }
    b.resize(b.len() + payload as usize, 0xab);
    b
}

/// Handshake with one page channel, write `bytes` on it (then close it),
/// and return the receiver's error and what the sender was told.
fn crafted(bytes: Vec<u8>) -> (Error, Option<Record>) {
    let (mut send, mut recv) = unix_pairs(2);
    recv.reverse();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    bounded(30, move || {
        let mut main = send.remove(0);
        let h = header(1, SIZE);
        raw_handshake(&mut *main, &mut send, &h);
        let _ = chio::write_all(&mut send[0], &bytes);
        drop(send);
        let err = rx.join().unwrap().unwrap_err();
        (err, read_record(&mut *main))
    })
}

fn check(bytes: Vec<u8>, want: impl Fn(&WireError) -> bool) {
    let (err, told) = crafted(bytes);
    match &err {
        Error::Protocol {
            id: ChannelId::Page(0),
            source,
            ..
        } if want(source) => {}
        other => panic!("unexpected error: {other}"),
    }
    match told {
        Some(Record::Error { message, .. }) => {
            assert!(message.contains("page channel 0"), "{message}")
        }
        other => panic!("sender was not told: {other:?}"),
    }
}

#[test]
fn offset_beyond_the_image() {
    check(data_packet(&[SIZE], 1, 4096), |e| {
        matches!(
            e,
            WireError::OffsetOutOfRange {
                offset: SIZE,
                size: SIZE
            }
        )
    });
}

#[test]
fn offset_not_page_aligned() {
    check(data_packet(&[4096 + 8], 1, 4096), |e| {
        matches!(e, WireError::OffsetMisaligned { offset: 4104, .. })
    });
}

#[test]
fn payload_length_does_not_match_the_pages() {
    check(data_packet(&[0, 4096], 1, 2 * 4096), |e| {
        matches!(e, WireError::PayloadMismatch { declared: 8192, .. })
    });
}

#[test]
fn zero_pages_with_payload() {
    check(data_packet(&[0], 0, 4096), |e| {
        matches!(
            e,
            WireError::PayloadMismatch {
                declared: 4096,
                expected: 0
            }
        )
    });
}

#[test]
fn more_entries_than_a_packet_holds() {
    check(packet(PacketFlags::DATA, 100, 100, 0, 0), |e| {
        matches!(e, WireError::TooManyEntries { capacity: 128, .. })
    });
}

#[test]
fn a_page_twice_in_one_epoch() {
    check(data_packet(&[4096, 4096], 2, 8192), |e| {
        matches!(
            e,
            WireError::DuplicatePage {
                offset: 4096,
                epoch: 0
            }
        )
    });
}

#[test]
fn a_packet_of_the_wrong_epoch() {
    check(packet(PacketFlags::SYNC, 0, 0, 0, 3), |e| {
        matches!(
            e,
            WireError::Epoch {
                found: 3,
                expected: 0
            }
        )
    });
}

#[test]
fn unknown_packet_flags() {
    check(
        packet(PacketFlags::DATA, 1, 0, 4096, 0)
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i == 7 { 0x80 } else { b })
            .collect(),
        |e| matches!(e, WireError::UnknownFlags { bits: 0x80, .. }),
    );
}

#[test]
fn garbage_instead_of_a_packet() {
    check(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\0\0\0\0\0\0".to_vec(),
        |e| {
            matches!(
                e,
                WireError::BadMagic {
                    found: 0x4745_5420,
                    ..
                }
            )
        },
    );
}

#[test]
fn a_truncated_packet_is_an_eof_error_naming_the_channel() {
    let mut b = data_packet(&[0, 4096], 2, 8192);
    b.truncate(b.len() - 100);
    let (err, told) = crafted(b);
    assert!(
        matches!(
            err,
            Error::Channel {
                id: ChannelId::Page(0),
                stage: transit_multifd::Stage::RecvPages,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("100 of"), "{err}");
    assert!(matches!(told, Some(Record::Error { .. })), "{told:?}");
}

#[test]
fn a_channel_closed_before_its_end_packet() {
    let (err, _) = crafted(Vec::new());
    assert!(
        matches!(
            err,
            Error::Channel {
                id: ChannelId::Page(0),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("END"), "{err}");
}

/// A sender that sends one page of 64, then END with totals that match
/// what it sent (digest included): the totals agree, but 63 pages were
/// never sent nor declared zero. The receiver must refuse, not say OK.
#[test]
fn a_session_that_leaves_pages_uncovered_is_refused() {
    use transit_multifd::digest::{page_hash, Digest};
    use transit_multifd::wire::Totals;
    let (mut send, mut recv) = unix_pairs(2);
    recv.reverse();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let (err, told) = bounded(30, move || {
        let mut main = send.remove(0);
        let h = header(1, SIZE);
        raw_handshake(&mut *main, &mut send, &h);
        let data = data_packet(&[0], 1, 4096);
        let page = &data[data.len() - 4096..];
        let mut digest = Digest::default();
        digest.add(page_hash(0, page));
        chio::write_all(&mut send[0], &data).unwrap();
        let mut end = packet(PacketFlags::END, 0, 0, 0, 0);
        PacketHeader {
            flags: PacketFlags::END,
            packet_num: 2,
            normal: 0,
            zero: 0,
            payload_len: 0,
            epoch: 0,
        }
        .encode_into(&mut end);
        chio::write_all(&mut send[0], &end).unwrap();
        let totals = Totals {
            pages: 1,
            zero_pages: 0,
            bytes: 4096,
            packets: 2,
            stream_len: SIZE,
            digest: digest.0,
        };
        chio::write_all(&mut *main, &Record::End(totals).to_bytes()).unwrap();
        let told = read_record(&mut *main);
        let err = rx.join().unwrap().unwrap_err();
        (err, told)
    });
    assert!(
        matches!(
            err,
            Error::Protocol {
                source: WireError::Incomplete {
                    covered: 1,
                    pages: 64
                },
                ..
            }
        ),
        "{err}"
    );
    match told {
        Some(Record::Error { message, .. }) => {
            assert!(
                message.contains("covering 1 of the image's 64 pages"),
                "{message}"
            )
        }
        other => panic!("the sender was told {other:?}, not the refusal"),
    }
}

/// A header that announces one page of data, then two data pages: the
/// receiver refuses the second (the room it checked was for one).
#[test]
fn data_beyond_what_the_header_announced_is_refused() {
    let (mut send, mut recv) = unix_pairs(2);
    recv.reverse();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let err = bounded(30, move || {
        let mut main = send.remove(0);
        let mut h = header(1, SIZE);
        h.data_bytes = 4096;
        raw_handshake(&mut *main, &mut send, &h);
        let _ = chio::write_all(&mut send[0], &data_packet(&[0, 8192], 2, 8192));
        let err = rx.join().unwrap().unwrap_err();
        drop(send);
        err
    });
    assert!(
        matches!(
            err,
            Error::Protocol {
                source: WireError::DataOverAnnounced { announced: 4096 },
                ..
            }
        ),
        "{err}"
    );
}
