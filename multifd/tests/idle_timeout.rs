//! The idle timeout (issue 14, item 7): once data flows, a peer that makes
//! no progress fails the session within the limit, naming the channel and
//! the stage, on either side and over any transport (these run on UNIX
//! socket pairs, where no socket option could help); the legitimate long
//! waits (a slow stream source, the receiver's commit before the verdict)
//! do not count.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use transit_channel::io as chio;
use transit_multifd::wire::{self, Record};
use transit_multifd::{
    ChannelId, Destination, Error, Payload, Receiver, RecvConfig, SendConfig, Sender, SourceImage,
    Stage,
};

const LIMIT: Duration = Duration::from_secs(1);

/// A fresh, empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "transit-idle-{name}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A sender that writes half a packet header on page channel 1, then
/// nothing, with every channel left open: the receiver fails within the
/// limit naming page channel 1 and the header stage, tells the sender, and
/// leaves no file behind. (Before: it held the channels and its temporary
/// file until the sender went away, 300 s and more.)
#[test]
fn a_sender_stalled_mid_header_fails_the_receiver() {
    let dir = temp_dir("stall");
    let out = dir.join("image.out");
    let (mut send, mut recv) = unix_pairs(3);
    recv.reverse();
    let config = RecvConfig {
        idle_timeout: Some(LIMIT),
        ..RecvConfig::default()
    };
    let dest = Destination::File {
        path: out.clone(),
        mode: None,
    };
    let rx = spawn_receiver(recv, config, dest);
    let (err, told, took) = bounded(20, move || {
        let mut main = send.remove(0);
        raw_handshake(&mut *main, &mut send, &header(2, 16 * 4096));
        let started = Instant::now();
        chio::write_all(&mut send[1], &control(wire::PacketFlags::SYNC, 1, 0)[..16]).unwrap();
        let err = rx.join().unwrap().unwrap_err();
        let took = started.elapsed();
        // The channels were open all along.
        (err, read_record(&mut *main), took)
    });
    match &err {
        Error::Timeout {
            id: ChannelId::Page(1),
            stage: Stage::RecvHeader,
            seconds,
            ..
        } if *seconds == LIMIT.as_secs_f64() => {}
        other => panic!("unexpected error: {other}"),
    }
    assert!(took >= LIMIT && took < LIMIT * 5, "took {took:?}");
    match told {
        Some(Record::Error { message, .. }) => {
            assert!(message.contains("page channel 1"), "{message}");
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("the sender was not told: {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir(&dir).unwrap();
}

/// A receiver that accepts the session and then never reads: the sender's
/// page channels fill up and it fails within the limit naming a page
/// channel and the send stage. (Before: a stopped receiver held the sender
/// for as long as it was stopped.)
#[test]
fn a_receiver_that_stops_reading_fails_the_sender() {
    let (send, mut recv) = unix_pairs(3);
    let (err, took) = bounded(20, move || {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let mut hdr = [0u8; wire::SESSION_HEADER_LEN];
            chio::read_all(&mut recv[0], &mut hdr).unwrap();
            for ch in &mut recv[1..] {
                let mut init = [0u8; wire::INIT_PACKET_LEN];
                chio::read_all(ch, &mut init).unwrap();
            }
            let accept = Record::Accept {
                channels: 2,
                have: false,
            }
            .to_bytes();
            chio::write_all(&mut recv[0], &accept).unwrap();
            // Hold every channel open, read nothing.
            let _ = stop_rx.recv();
            drop(recv);
        });
        let mut send = send;
        let main = send.remove(0);
        let source = SourceImage::generate(&spec(16 << 20, 0.0, 3)).unwrap();
        let config = SendConfig {
            idle_timeout: Some(LIMIT),
            ..SendConfig::default()
        };
        let mut tx = Sender::new(config, Payload::Image(source), main, send).unwrap();
        let started = Instant::now();
        let err = match tx.send_all() {
            Ok(()) => tx.finish().unwrap_err(),
            Err(e) => e,
        };
        let took = started.elapsed();
        drop(stop_tx);
        peer.join().unwrap();
        (err, took)
    });
    match &err {
        Error::Timeout {
            id: ChannelId::Page(_),
            stage: Stage::SendPages,
            ..
        } => {}
        other => panic!("unexpected error: {other}"),
    }
    assert!(took >= LIMIT && took < LIMIT * 5, "took {took:?}");
}

/// A stream source that pauses for longer than the sender's limit: the
/// sender waits on its source, not on the peer, so the session succeeds.
#[test]
fn a_slow_stream_source_is_not_idle_on_the_sender() {
    struct Slow(u32);
    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Ok(0);
            }
            self.0 -= 1;
            std::thread::sleep(LIMIT * 2);
            let n = buf.len().min(1000);
            buf[..n].fill(7);
            Ok(n)
        }
    }
    let (mut send, mut recv) = unix_pairs(3);
    recv.reverse();
    let config = RecvConfig {
        idle_timeout: None,
        ..RecvConfig::default()
    };
    let rx = spawn_receiver(recv, config, Destination::Writer(Box::new(std::io::sink())));
    let sent = bounded(30, move || {
        let main = send.remove(0);
        let config = SendConfig {
            idle_timeout: Some(LIMIT),
            ..SendConfig::default()
        };
        let mut tx = Sender::new(config, Payload::Stream, main, send)?;
        tx.send_stream(&mut Slow(2))?;
        tx.finish()
    });
    sent.expect("sender");
    let got = rx.join().unwrap().expect("receiver");
    assert_eq!(got.stats.stream_len, 2000);
}

/// The receiver's commit (fsync, rename: here a 2 s sleep) runs before the
/// verdict; neither side counts it as idle.
#[test]
fn a_slow_commit_before_the_verdict_is_not_idle() {
    let (mut send, recv) = unix_pairs(3);
    let rx = std::thread::spawn(move || {
        let config = RecvConfig {
            idle_timeout: Some(LIMIT),
            ..RecvConfig::default()
        };
        let mut r = Receiver::new(config, Destination::Memory { prefault: false });
        for ch in recv {
            r.accept_channel(ch)?;
        }
        r.run_with(|_| {
            std::thread::sleep(LIMIT * 2);
            Ok(())
        })
    });
    let sent = bounded(30, move || {
        let main = send.remove(0);
        let source = SourceImage::generate(&spec(1 << 20, 0.5, 4)).unwrap();
        let config = SendConfig {
            idle_timeout: Some(LIMIT),
            ..SendConfig::default()
        };
        let mut tx = Sender::new(config, Payload::Image(source), main, send)?;
        tx.send_all()?;
        tx.finish()
    });
    sent.expect("sender");
    rx.join().unwrap().expect("receiver");
}
