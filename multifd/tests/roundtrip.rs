//! Image round trips: UNIX socket pairs and TCP loopback, 1 and 4 page
//! channels, 0 %, 50 % and 100 % zero pages; the destination must equal
//! the source and both sides must count the same pages.

mod common;

use common::*;
use transit_multifd::image::SourceImage;
use transit_multifd::{Destination, RecvConfig, SendConfig};

fn check(kind: &str, channels: usize, zero_ratio: f64) {
    let spec = spec(4 << 20, zero_ratio, 1000 + channels as u64);
    let source = SourceImage::generate(&spec).unwrap();
    let expected = source.as_slice().to_vec();
    let (send, recv) = match kind {
        "unix" => unix_pairs(channels + 1),
        _ => tcp_pairs(channels + 1),
    };
    let (sent, got) = bounded(60, move || {
        image_roundtrip(send, recv, source, SendConfig::default())
    });
    let sent = sent.unwrap();
    let got = got.unwrap();
    let image = got.image.as_ref().unwrap();
    assert!(
        image.as_slice() == &expected[..],
        "destination differs from source"
    );
    assert_eq!(sent.zero_pages, spec.zero_pages());
    assert_eq!(sent.pages + sent.zero_pages, spec.pages());
    assert_eq!(got.stats.pages, sent.pages);
    assert_eq!(got.stats.zero_pages, sent.zero_pages);
    assert_eq!(got.stats.digest, sent.digest);
    assert_eq!(sent.channels.len(), channels);
    assert_eq!(sent.bytes, sent.pages * 4096);
    if zero_ratio < 1.0 {
        assert_ne!(sent.digest, 0);
    }
}

#[test]
fn unix_1_channel_0_percent_zero() {
    check("unix", 1, 0.0);
}

#[test]
fn unix_4_channels_50_percent_zero() {
    check("unix", 4, 0.5);
}

#[test]
fn unix_4_channels_100_percent_zero() {
    check("unix", 4, 1.0);
}

#[test]
fn tcp_1_channel_50_percent_zero() {
    check("tcp", 1, 0.5);
}

#[test]
fn tcp_4_channels_0_percent_zero() {
    check("tcp", 4, 0.0);
}

#[test]
fn tcp_4_channels_100_percent_zero() {
    check("tcp", 4, 1.0);
}

#[test]
fn every_page_channel_carries_data() {
    let spec = spec(8 << 20, 0.0, 5);
    let source = SourceImage::generate(&spec).unwrap();
    let (send, recv) = unix_pairs(5);
    let config = SendConfig {
        packet_payload: 64 * 1024,
        ..SendConfig::default()
    };
    let started = std::time::Instant::now();
    let (sent, got) = bounded(60, move || image_roundtrip(send, recv, source, config));
    let wall = started.elapsed().as_secs_f64();
    let sent = sent.unwrap();
    let got = got.unwrap();
    assert!(
        sent.channels.iter().all(|c| c.pages > 0),
        "{:?}",
        sent.channels
    );
    // Each side's channel threads measured their own CPU time: some was
    // spent on every channel, and a thread cannot use more CPU than the
    // wall time it lived.
    for c in sent.channels.iter().chain(&got.stats.channels) {
        assert!(
            c.cpu_seconds > 0.0 && c.cpu_seconds <= wall,
            "{c:?} (wall {wall} s)"
        );
    }
}

#[test]
fn page_channels_stay_open_until_the_sender_has_said_goodbye() {
    // After END the sender still ends each page channel's transport
    // (websocket close frame, TLS close_notify). A receiver that closed a
    // page channel as soon as it read END made that late write fail with
    // EPIPE, failing a transfer that worked (seen in 7 of 60 runs of a
    // wss test). Here the goodbye comes 200 ms after END.
    let spec = spec(2 << 20, 0.5, 21);
    let source = SourceImage::generate(&spec).unwrap();
    let expected = source.as_slice().to_vec();
    let (mut send, recv) = unix_pairs(3);
    for ch in send.iter_mut().skip(1) {
        let inner = std::mem::replace(ch, Box::new(transit_channel::NullChannel::new()));
        *ch = Tamper::late_bye(inner, std::time::Duration::from_millis(200));
    }
    let (sent, got) = bounded(60, move || {
        image_roundtrip(send, recv, source, SendConfig::default())
    });
    sent.expect("sender");
    let got = got.expect("receiver");
    assert!(got.image.as_ref().unwrap().as_slice() == &expected[..]);
}

#[test]
fn partial_last_page_and_small_pages() {
    // 512-byte pages, an image that ends 100 bytes into its last page,
    // packets of 8 pages.
    let mut s = spec(300 * 512 + 100, 0.3, 9);
    s.page_size = 512;
    let source = SourceImage::generate(&s).unwrap();
    let expected = source.as_slice().to_vec();
    let (send, recv) = unix_pairs(3);
    let config = SendConfig {
        page_size: 512,
        packet_payload: 8 * 512,
        ..SendConfig::default()
    };
    let (sent, got) = bounded(60, move || image_roundtrip(send, recv, source, config));
    let sent = sent.unwrap();
    let got = got.unwrap();
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    assert_eq!(
        sent.bytes,
        expected.len() as u64 - sent.zero_pages * 512 + {
            // A zero last page counts 100 bytes, not 512.
            if s.is_zero_page(300) {
                412
            } else {
                0
            }
        }
    );
}

#[test]
fn large_pages_without_verification() {
    let mut s = spec(2 << 20, 0.5, 3);
    s.page_size = 65536;
    let source = SourceImage::generate(&s).unwrap();
    let expected = source.as_slice().to_vec();
    let (send, recv) = unix_pairs(3);
    let config = SendConfig {
        page_size: 65536,
        packet_payload: 1 << 20,
        verify: false,
        ..SendConfig::default()
    };
    let (sent, got) = bounded(60, move || image_roundtrip(send, recv, source, config));
    let sent = sent.unwrap();
    let got = got.unwrap();
    assert_eq!(sent.digest, 0);
    assert!(got.image.unwrap().as_slice() == &expected[..]);
}

#[test]
fn empty_image() {
    let source = SourceImage::from_vec(Vec::new());
    let (send, recv) = unix_pairs(2);
    let (sent, got) = bounded(30, move || {
        image_roundtrip(send, recv, source, SendConfig::default())
    });
    assert_eq!(sent.unwrap().pages, 0);
    assert!(got.unwrap().image.unwrap().is_empty());
}

#[test]
fn file_destination_persists_and_unpersisted_file_is_removed() {
    let dir = std::env::temp_dir().join(format!("transit-multifd-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("image.bin");
    let spec = spec(1 << 20, 0.5, 77);
    let source = SourceImage::generate(&spec).unwrap();
    let expected = source.as_slice().to_vec();
    let (mut send, mut recv) = unix_pairs(3);
    recv.reverse();
    let t = target.clone();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::File {
            path: t,
            mode: None,
        },
    );
    let main = send.remove(0);
    let sent = bounded(30, move || {
        let mut tx = transit_multifd::Sender::new(
            SendConfig::default(),
            transit_multifd::Payload::Image(source),
            main,
            send,
        )?;
        tx.send_all()?;
        tx.finish()
    });
    sent.unwrap();
    let got = rx.join().unwrap().unwrap();
    // The receiver put the file in place before it told the sender.
    let image = got.image.unwrap();
    let tmp = image.temp_path().unwrap().to_path_buf();
    assert!(!tmp.exists() && target.exists());
    assert_eq!(std::fs::read(&target).unwrap(), expected);
    assert_eq!(image.persist().unwrap(), target);

    // A file destination dropped without persist leaves nothing behind.
    let other = dir.join("dropped.bin");
    let img = transit_multifd::DestImage::create_file(&other, 8192, None).unwrap();
    let tmp = img.temp_path().unwrap().to_path_buf();
    assert!(tmp.exists());
    drop(img);
    assert!(!tmp.exists() && !other.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mapped_file_source() {
    let dir = std::env::temp_dir().join(format!("transit-multifd-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("src.bin");
    let data: Vec<u8> = (0..(3 << 20) + 777).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let source = SourceImage::map_file(&path).unwrap();
    assert!(!source.is_writable());
    let (send, recv) = unix_pairs(3);
    let (sent, got) = bounded(60, move || {
        image_roundtrip(send, recv, source, SendConfig::default())
    });
    sent.unwrap();
    assert!(got.unwrap().image.unwrap().as_slice() == &data[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}
