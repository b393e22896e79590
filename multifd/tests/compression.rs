//! `SendConfig::compress`: zstd per packet. Compressible images arrive
//! identical in memory and file destinations, with far fewer bytes on the
//! wire; random data goes raw; streams too; `Auto` works; and a receiver
//! refuses a compressed packet in an uncompressed session and a frame
//! that does not decompress to its data.

mod common;

use common::*;
use transit_multifd::compress::Compress;
use transit_multifd::image::{Content, SourceImage};
use transit_multifd::wire::{self, Compression, PacketFlags, PacketHeader, WireError};
use transit_multifd::{Destination, Error, Payload, RecvConfig, SendConfig, Sender};

fn compressible(size: u64, zero_ratio: f64, seed: u64) -> SourceImage {
    let mut s = spec(size, zero_ratio, seed);
    s.content = Content::Compressible;
    SourceImage::generate(&s).unwrap()
}

fn zstd() -> SendConfig {
    SendConfig {
        compress: Compress::Zstd { level: 1 },
        ..SendConfig::default()
    }
}

#[test]
fn a_compressible_image_arrives_identical_with_few_wire_bytes() {
    // 30% zero pages: packets hold several runs of normal pages.
    let source = compressible(8 << 20, 0.3, 5);
    let expected = source.as_slice().to_vec();
    let (send, recv) = unix_pairs(5);
    let (sent, got) = bounded(60, move || image_roundtrip(send, recv, source, zstd()));
    let (sent, got) = (sent.unwrap(), got.unwrap());
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    assert_eq!(got.stats.bytes, sent.bytes);
    assert_eq!(got.stats.digest, sent.digest);
    assert!(
        sent.wire_bytes < sent.bytes / 2,
        "wire {} for {} data bytes",
        sent.wire_bytes,
        sent.bytes
    );
    assert_eq!(got.stats.wire_bytes, sent.wire_bytes);
}

#[test]
fn into_a_file_and_random_data_goes_raw() {
    let dir = std::env::temp_dir().join(format!("transit-zstd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.img");
    for (content, seed) in [(Content::Compressible, 1), (Content::Random, 2)] {
        let mut s = spec(4 << 20, 0.5, seed);
        s.content = content;
        let source = SourceImage::generate(&s).unwrap();
        let expected = source.as_slice().to_vec();
        let (mut send, recv) = tcp_pairs(3);
        let rx = spawn_receiver(
            recv,
            RecvConfig::default(),
            Destination::File {
                path: out.clone(),
                mode: None,
            },
        );
        let main = send.remove(0);
        let sent = bounded(60, move || {
            let mut tx = Sender::new(zstd(), Payload::Image(source), main, send).unwrap();
            tx.send_all().unwrap();
            tx.finish().unwrap()
        });
        rx.join().unwrap().unwrap();
        assert!(std::fs::read(&out).unwrap() == expected, "{content:?}");
        if content == Content::Random {
            // Nothing shrank: every packet went raw.
            let headers = sent.wire_bytes - sent.bytes;
            assert!(
                headers < sent.bytes / 100,
                "{headers} bytes beside the data"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stream_compresses_and_auto_works_too() {
    let text: Vec<u8> = b"migration stream line, mostly the same\n".repeat(100_000);
    for mode in [Compress::Zstd { level: 3 }, Compress::Auto { level: 1 }] {
        let (mut send, recv) = tcp_pairs(3);
        let (rx, out) = spawn_stream_receiver(recv);
        let main = send.remove(0);
        let data = text.clone();
        let sent = bounded(60, move || {
            let config = SendConfig {
                compress: mode,
                ..SendConfig::default()
            };
            let mut tx = Sender::new(config, Payload::Stream, main, send).unwrap();
            tx.send_stream(&mut &data[..]).unwrap();
            tx.finish().unwrap()
        });
        let got = rx.join().unwrap().unwrap();
        assert!(*out.0.lock().unwrap() == text, "{mode:?}");
        assert_eq!(got.stats.digest, sent.digest);
        if let Compress::Zstd { .. } = mode {
            assert!(
                sent.wire_bytes < sent.bytes / 10,
                "{mode:?}: {}",
                sent.wire_bytes
            );
        }
    }
}

#[test]
fn auto_on_an_image_arrives_identical() {
    let source = compressible(4 << 20, 0.2, 9);
    let expected = source.as_slice().to_vec();
    let (send, recv) = tcp_pairs(5);
    let config = SendConfig {
        compress: Compress::Auto { level: 1 },
        ..SendConfig::default()
    };
    let (sent, got) = bounded(60, move || image_roundtrip(send, recv, source, config));
    let (sent, got) = (sent.unwrap(), got.unwrap());
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    assert_eq!(got.stats.digest, sent.digest);
}

/// Hand-made session: header announcing `compression`, one page channel,
/// a 1-page packet flagged COMPRESSED carrying `frame`.
fn receive_one_compressed(compression: Compression, frame: &[u8]) -> Error {
    let (mut send, recv) = unix_pairs(2);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let mut h = header(1, 1 << 16);
    h.compression = compression;
    let (main, pages) = send.split_at_mut(1);
    raw_handshake(main[0].as_mut(), pages, &h);
    let mut pkt = vec![0u8; wire::PACKET_HEADER_LEN];
    PacketHeader {
        flags: PacketFlags::COMPRESSED,
        packet_num: 0,
        normal: 1,
        zero: 0,
        payload_len: frame.len() as u32,
        epoch: 0,
    }
    .encode_into(&mut pkt);
    pkt.extend_from_slice(&0u64.to_be_bytes());
    pkt.extend_from_slice(frame);
    let _ = transit_channel::io::write_all(pages[0].as_mut(), &pkt);
    let err = bounded(30, move || rx.join().unwrap()).expect_err("refused");
    drop(send);
    err
}

#[test]
fn compressed_packets_outside_a_zstd_session_or_that_lie_are_refused() {
    let frame = zstd::bulk::compress(&[7u8; 4096], 1).unwrap();
    let e = receive_one_compressed(Compression::None, &frame);
    assert!(
        matches!(
            e,
            Error::Protocol {
                source: WireError::CompressedWithoutCompression,
                ..
            }
        ),
        "{e}"
    );
    // A frame of 100 bytes of data for a 4096-byte page.
    let short = zstd::bulk::compress(&[7u8; 100], 1).unwrap();
    let e = receive_one_compressed(Compression::Zstd, &short);
    assert!(
        matches!(
            e,
            Error::Protocol {
                source: WireError::BadCompressedPayload { expected: 4096, .. },
                ..
            }
        ),
        "{e}"
    );
}
