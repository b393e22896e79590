//! Failures mid-session: a receiver that dies, aborts on either side, a
//! dropped sender, and corruption in flight caught by the digest.

mod common;

use std::time::Duration;

use common::*;
use transit_channel::io as chio;
use transit_multifd::wire::{self, ErrorCode, Record};
use transit_multifd::{
    ChannelId, Destination, Error, Payload, Receiver, RecvConfig, SendConfig, Sender, SourceImage,
};

#[test]
fn a_receiver_that_dies_mid_transfer_fails_the_sender_within_5_s() {
    let spec = spec(64 << 20, 0.0, 3);
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, mut recv) = unix_pairs(5);
    // A raw receiver: accepts the handshake, reads a little, then its
    // process "dies" (every channel is dropped without a word).
    let fake = std::thread::spawn(move || {
        let mut hdr = [0u8; wire::SESSION_HEADER_LEN];
        chio::read_all(&mut recv[0], &mut hdr).unwrap();
        let h = wire::decode_session_header(&hdr).unwrap();
        for ch in recv[1..].iter_mut() {
            let mut b = [0u8; wire::INIT_PACKET_LEN];
            chio::read_all(ch, &mut b).unwrap();
        }
        chio::write_all(
            &mut recv[0],
            &Record::Accept {
                channels: h.channels,
                have: false,
            }
            .to_bytes(),
        )
        .unwrap();
        let mut b = vec![0u8; 64 * 1024];
        chio::read_all(&mut recv[1], &mut b).unwrap();
        drop(recv);
    });
    let main = send.remove(0);
    let err = bounded(5, move || {
        let mut tx =
            Sender::new(SendConfig::default(), Payload::Image(source), main, send).unwrap();
        match tx.send_all() {
            Err(e) => e,
            Ok(()) => tx.finish().unwrap_err(),
        }
    });
    fake.join().unwrap();
    assert!(
        matches!(err.channel(), Some(ChannelId::Page(_) | ChannelId::Main)),
        "{err}"
    );
    assert!(matches!(err, Error::Channel { .. }), "{err}");
    assert!(
        err.to_string().contains("socketpair"),
        "the peer is named: {err}"
    );
}

#[test]
fn a_flipped_byte_in_flight_fails_both_sides_with_a_mismatch() {
    let spec = spec(2 << 20, 0.0, 8);
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, recv) = unix_pairs(3);
    // Past the init packet (32) and the first packet's header and
    // offsets (32 + 128 * 8): inside page data.
    let ch = send.remove(1);
    send.insert(1, Tamper::corrupt(ch, 5000));
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    let err = bounded(30, move || {
        let mut tx =
            Sender::new(SendConfig::default(), Payload::Image(source), main, send).unwrap();
        tx.send_all().unwrap();
        tx.finish().unwrap_err()
    });
    let rerr = rx.join().unwrap().unwrap_err();
    for e in [&err, &rerr] {
        match e {
            Error::Mismatch { sender, receiver } => {
                assert_ne!(sender.digest, receiver.digest);
                assert_eq!(sender.pages, receiver.pages);
            }
            other => panic!("not a mismatch: {other}"),
        }
    }
    assert!(err.to_string().contains("verification failed"), "{err}");
}

#[test]
fn a_stream_that_fails_verification_never_reaches_its_sink_whole() {
    // A consumer that acts on what it reads (QEMU loading a migration
    // stream from `recv --output -`) must not get the whole of a stream
    // that failed verification: the receiver holds back the last 4 MiB,
    // whole chunks, also when the last chunk is short (here 100 bytes:
    // QEMU's trailer after its end-of-stream marker came alone like that).
    let text = pattern((8 << 20) + 100);
    let (mut send, recv) = unix_pairs(3);
    let ch = send.remove(1);
    send.insert(1, Tamper::corrupt(ch, 5000));
    let (rx, out) = spawn_stream_receiver(recv);
    let main = send.remove(0);
    let data = text.clone();
    let err = bounded(30, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Stream, main, send).unwrap();
        tx.send_stream(&mut &data[..]).unwrap();
        tx.finish().unwrap_err()
    });
    let rerr = rx.join().unwrap().unwrap_err();
    for e in [&err, &rerr] {
        assert!(matches!(e, Error::Mismatch { .. }), "not a mismatch: {e}");
    }
    let got = out.0.lock().unwrap().len();
    assert_eq!(
        got,
        4 << 20,
        "a stream that failed verification reached its sink up to byte {got} of {}",
        text.len()
    );
}

#[test]
fn aborting_the_receiver_tells_the_sender_why() {
    let spec = spec(16 << 20, 0.0, 4);
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, recv) = unix_pairs(3);
    let recv: Vec<_> = recv
        .into_iter()
        .map(|c| Tamper::slow(c, Duration::from_millis(2)))
        .collect();
    let mut rx = Receiver::new(
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let handle = rx.abort_handle();
    let rx = std::thread::spawn(move || {
        for ch in recv {
            rx.accept_channel(ch)?;
        }
        let progress = rx.progress().unwrap();
        let watcher = std::thread::spawn(move || {
            while progress.bytes() == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            handle.abort("operator pressed ^C");
        });
        let r = rx.run();
        watcher.join().unwrap();
        r
    });
    let main = send.remove(0);
    let err = bounded(30, move || {
        let mut tx =
            Sender::new(SendConfig::default(), Payload::Image(source), main, send).unwrap();
        match tx.send_all() {
            Err(e) => e,
            Ok(()) => tx.finish().unwrap_err(),
        }
    });
    let rerr = rx.join().unwrap().unwrap_err();
    assert!(
        matches!(rerr, Error::Aborted(ref m) if m.contains("^C")),
        "{rerr}"
    );
    match &err {
        Error::Remote { code, message, .. } => {
            assert_eq!(*code, ErrorCode::Aborted);
            assert!(message.contains("^C"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn aborting_the_sender_tells_the_receiver_why() {
    let spec = spec(16 << 20, 0.0, 5);
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, recv) = unix_pairs(3);
    let recv: Vec<_> = recv
        .into_iter()
        .map(|c| Tamper::slow(c, Duration::from_millis(2)))
        .collect();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    let err = bounded(30, move || {
        let mut tx =
            Sender::new(SendConfig::default(), Payload::Image(source), main, send).unwrap();
        let handle = tx.abort_handle();
        let progress = tx.progress();
        std::thread::spawn(move || {
            while progress.bytes() == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            handle.abort("disk full");
        });
        match tx.send_all() {
            Err(e) => e,
            Ok(()) => tx.finish().unwrap_err(),
        }
    });
    assert!(
        matches!(err, Error::Aborted(ref m) if m.contains("disk full")),
        "{err}"
    );
    let rerr = bounded(30, move || rx.join().unwrap().unwrap_err());
    assert!(
        matches!(&rerr, Error::Remote { code: ErrorCode::Aborted, message, .. } if message.contains("disk full")),
        "{rerr}"
    );
}

#[test]
fn dropping_an_unfinished_sender_fails_the_receiver() {
    let spec = spec(1 << 20, 0.0, 6);
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, recv) = unix_pairs(2);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    bounded(30, move || {
        let mut tx =
            Sender::new(SendConfig::default(), Payload::Image(source), main, send).unwrap();
        tx.send_all().unwrap();
        drop(tx);
    });
    let rerr = bounded(30, move || rx.join().unwrap().unwrap_err());
    assert!(rerr.to_string().contains("dropped"), "{rerr}");
}

#[test]
fn a_sender_whose_receiver_never_answers_times_out() {
    let (mut send, _recv) = unix_pairs(2);
    let main = send.remove(0);
    let err = bounded(10, move || {
        let config = SendConfig {
            handshake_timeout: Some(Duration::from_millis(200)),
            ..SendConfig::default()
        };
        Sender::new(
            config,
            Payload::Image(SourceImage::from_vec(vec![0; 4096])),
            main,
            send,
        )
        .unwrap_err()
    });
    assert!(
        matches!(
            err,
            Error::Timeout {
                id: ChannelId::Main,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_page_channel_eof_during_a_sync_waits_for_the_senders_reason() {
    // The receiver's main thread waits at a sync barrier when page channel
    // 0 ends; the sender's error record arrives on the main channel a
    // moment later. The reason must win over the end of file it caused.
    let h = header(2, 1 << 20);
    let (mut send, recv) = unix_pairs(3);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let mut main = send.remove(0);
    raw_handshake(&mut *main, &mut send, &h);
    chio::write_all(&mut *main, &Record::Sync { epoch: 0 }.to_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(send.remove(0)); // page channel 0: end of file
    std::thread::sleep(Duration::from_millis(200));
    let rec = Record::Error {
        code: ErrorCode::Aborted,
        message: "operator cancelled the sender".into(),
    };
    chio::write_all(&mut *main, &rec.to_bytes()).unwrap();
    let err = bounded(30, move || rx.join().unwrap().unwrap_err());
    drop(main);
    assert!(
        matches!(&err, Error::Remote { code: ErrorCode::Aborted, message, .. } if message.contains("operator cancelled")),
        "{err}"
    );
}

/// The receiver's commit step (put the output in place) fails after the
/// data was verified: the sender must hear that failure instead of a
/// verdict, so its success always means "in place".
#[test]
fn a_failed_commit_fails_the_sender_instead_of_a_verdict() {
    let spec = spec(1 << 20, 0.5, 5);
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, recv) = unix_pairs(3);
    let rx = std::thread::spawn(move || {
        let mut rx = Receiver::new(
            RecvConfig::default(),
            Destination::Memory { prefault: false },
        );
        for ch in recv {
            rx.accept_channel(ch)?;
        }
        rx.run_with(|out| {
            assert!(out.image.is_some());
            Err(transit_multifd::Error::data(
                "put the output in place at out.img",
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ))
        })
    });
    let main = send.remove(0);
    let sent = bounded(30, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Image(source), main, send)?;
        tx.send_all()?;
        tx.finish()
    });
    let err = sent.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, transit_multifd::Error::Remote { .. })
            && msg.contains("put the output in place at out.img"),
        "{msg}"
    );
    let rerr = rx.join().unwrap().unwrap_err().to_string();
    assert!(rerr.contains("put the output in place"), "{rerr}");
}
