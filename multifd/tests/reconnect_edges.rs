//! Edge cases of a lost page channel rejoining its session, each a
//! defect found in review (each test failed or hung before its fix): a
//! packet cut short in a memory destination, a rejoin queued before END is
//! read, short stream appends with reconnection, a second loss long after
//! the first, a stalled replacement.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{
    bounded, rejoining_config, run_receiver, socketpair_reconnect, spec, unix_pairs, Chans,
    SharedSink, Tamper, Then,
};
use transit_channel::fault::FailAfter;
use transit_channel::{Channel, SocketChannel};
use transit_multifd::{
    Destination, Payload, Receiver, Reconnect, RecvConfig, SendConfig, Sender, SourceImage,
};

/// (A) `lost_since` is only cleared by an Ack: a second, independent loss
/// more than `window` after the first one (no Ack read in between: images
/// ask for one every 32 MiB per channel) is not even retried.
#[test]
fn a_second_loss_long_after_the_first_is_retried() {
    let (sent, got, made) = bounded(60, || {
        let (mut send, recv_ends): (Chans, Chans) = unix_pairs(2);
        let rx = Receiver::new(rejoining_config(), Destination::Memory { prefault: false });
        let made = Arc::new(AtomicUsize::new(0));
        let config = SendConfig {
            max_bandwidth: Some(4 << 20),
            reconnect: Some(socketpair_reconnect(
                rx.rejoin_handle(),
                Duration::from_secs(2),
                vec![Some(12 << 20)],
                made.clone(),
            )),
            ..SendConfig::default()
        };
        let got = run_receiver(rx, recv_ends);
        let main = send.remove(0);
        let pages: Chans = vec![Box::new(FailAfter::new(send.remove(0), 1 << 20))];
        let src = SourceImage::generate(&spec(24 << 20, 0.0, 7)).unwrap();
        let sent = (|| {
            let mut tx = Sender::new(config, Payload::Image(src), main, pages)?;
            tx.send_all()?;
            tx.finish()
        })();
        (sent, got.join().unwrap(), made.load(Ordering::SeqCst))
    });
    assert!(
        sent.is_ok(),
        "sender: {sent:?} (new connections made: {made})"
    );
    assert!(got.is_ok());
    assert_eq!(made, 2);
}

/// 100 appends of 10 bytes each to a stream over 1 page channel, with or
/// without reconnection: (sender ok, receiver ok, bytes received).
fn short_stream_appends(reconnect: bool) -> (bool, bool, usize) {
    bounded(20, move || {
        let (mut send, recv_ends): (Chans, Chans) = unix_pairs(2);
        let out = Arc::new(Mutex::new(Vec::new()));
        let rx = Receiver::new(
            if reconnect {
                rejoining_config()
            } else {
                RecvConfig::default()
            },
            Destination::Writer(Box::new(SharedSink(out.clone()))),
        );
        let config = SendConfig {
            reconnect: reconnect.then(|| {
                socketpair_reconnect(
                    rx.rejoin_handle(),
                    Duration::from_secs(5),
                    vec![],
                    Arc::new(AtomicUsize::new(0)),
                )
            }),
            ..SendConfig::default()
        };
        let got = run_receiver(rx, recv_ends);
        let main = send.remove(0);
        let sent = (|| {
            let mut tx = Sender::new(config, Payload::Stream, main, send)?;
            for i in 0..100u8 {
                tx.send_stream(&mut &[i; 10][..])?;
            }
            tx.finish()
        })();
        let n = out.lock().unwrap().len();
        (sent.is_ok(), got.join().unwrap().is_ok(), n)
    })
}

/// (B) Stream chunks held until acknowledged are counted in bytes, but
/// the pool is sized in buffers: appending short pieces (send_stream
/// "may be called again to append") exhausts the pool before any Ack is
/// requested, and the producer waits forever.
#[test]
fn short_stream_appends_do_not_hang_with_reconnect() {
    assert_eq!(short_stream_appends(true), (true, true, 1000));
}

/// (C) Memory destination: a packet cut mid-payload has written page 0
/// (and part of page 1) into the image without setting their written
/// bits. The packet goes again after `image_mut` zeroed those pages: now
/// they are zero entries, `take_written` is false, nothing is zeroed, and
/// the pass-1 bytes stay. Digest and totals agree (zero_hash on both
/// sides): silent corruption.
#[test]
fn a_cut_packet_resent_after_image_mut_leaves_no_stale_bytes() {
    let (sent, got, want) = bounded(60, || {
        let (mut send, mut recv_ends): (Chans, Chans) = unix_pairs(3);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let reached = Arc::new(AtomicBool::new(false));
        // Channel 0 (receiver end index 1): header + 4 entries + page 0 +
        // 100 bytes of page 1, then the cut.
        let r1 = recv_ends.remove(1);
        recv_ends.insert(
            1,
            Tamper::reads_until(
                r1,
                32 + 4 * 8 + 4096 + 100,
                Then::Cut {
                    gate: gate.clone(),
                    reached: reached.clone(),
                },
            ),
        );
        let rx = Receiver::new(rejoining_config(), Destination::Memory { prefault: false });
        let made = Arc::new(AtomicUsize::new(0));
        let config = SendConfig {
            packet_payload: 16 * 1024,
            reconnect: Some(socketpair_reconnect(
                rx.rejoin_handle(),
                Duration::from_secs(10),
                vec![],
                made,
            )),
            ..SendConfig::default()
        };
        let got = run_receiver(rx, recv_ends);
        let main = send.remove(0);
        let src = SourceImage::generate(&spec(32 * 4096, 0.0, 9)).unwrap();
        let mut want = Vec::new();
        let sent = (|| {
            let mut tx = Sender::new(config, Payload::Image(src), main, send)?;
            tx.send_all()?;
            while !reached.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let img = tx.image_mut()?;
            img[..2 * 4096].fill(0);
            {
                let (m, cv) = &*gate;
                *m.lock().unwrap() = true;
                cv.notify_all();
            }
            tx.send_pass([0u64, 1])?;
            want = tx.image().unwrap().to_vec();
            tx.finish()
        })();
        (sent, got.join().unwrap(), want)
    });
    let sent = sent.expect("sender");
    let got = got.expect("receiver");
    assert!(sent.reconnects >= 1);
    let img = got.image.as_ref().unwrap().as_slice();
    let stale = img[..8192].iter().filter(|&&b| b != 0).count();
    assert_eq!(stale, 0, "{stale} stale non-zero bytes in pages 0-1");
    assert!(img == &want[..]);
}

/// (D) After a reconnect the worker's watchdog state stays `Off` for the
/// rest of the job: a replacement connection that stalls is never cut.
#[test]
fn a_stalled_replacement_is_cut_too() {
    let r = bounded(30, || {
        let (mut send, recv_ends): (Chans, Chans) = unix_pairs(2);
        let rx = Receiver::new(
            RecvConfig {
                idle_timeout: Some(Duration::from_millis(500)),
                ..rejoining_config()
            },
            Destination::Memory { prefault: false },
        );
        let made = Arc::new(AtomicUsize::new(0));
        let rejoin = rx.rejoin_handle();
        let m2 = made.clone();
        let calls = Arc::new(AtomicUsize::new(0));
        let rc = Reconnect::new(
            Duration::from_secs(5),
            Arc::new(move |_id: u32| {
                let (a, b) = SocketChannel::pair()?;
                let r = rejoin.clone();
                std::thread::spawn(move || {
                    let _ = r.offer(Box::new(b));
                });
                m2.fetch_add(1, Ordering::SeqCst);
                // The first replacement stalls 256 KiB in (mid-packet).
                Ok(if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Box::new(FailAfter::stall(Box::new(a), 256 * 1024 + 999)) as Box<dyn Channel>
                } else {
                    Box::new(a)
                })
            }),
        );
        let config = SendConfig {
            idle_timeout: Some(Duration::from_millis(500)),
            reconnect: Some(rc),
            ..SendConfig::default()
        };
        let got = run_receiver(rx, recv_ends);
        let main = send.remove(0);
        let pages: Chans = vec![Box::new(FailAfter::new(send.remove(0), 3 << 20))];
        let src = SourceImage::generate(&spec(8 << 20, 0.0, 11)).unwrap();
        let sent = (|| {
            let t0 = std::time::Instant::now();
            let mut tx = Sender::new(config, Payload::Image(src), main, pages)?;
            tx.send_all()?;
            let r = tx.finish();
            eprintln!("D: sender took {:?}", t0.elapsed());
            r
        })();
        let t = std::time::Instant::now();
        let got = got.join().unwrap();
        eprintln!(
            "D: sent {:?} got {:?} made {} t {:?}",
            sent.as_ref().map(|s| s.reconnects),
            got.as_ref().map(|g| g.stats.reconnects),
            made.load(Ordering::SeqCst),
            t.elapsed()
        );
        (sent.is_ok(), got.is_ok(), made.load(Ordering::SeqCst))
    });
    assert_eq!(r, (true, true, 2));
}

/// (E) The sender's idle timeout cuts the channel while it waits for
/// END's Ack (the receiver is slow); the rejoin is queued in `waiting`,
/// then the receiver reads END from what the old connection buffered,
/// records `ended` and exits: nobody ever answers the queued rejoin, and
/// the sender fails after its window although everything was applied.
#[test]
fn a_rejoin_queued_before_end_is_read_is_answered() {
    let (sent, got, made) = bounded(60, || {
        let (mut send, mut recv_ends): (Chans, Chans) = unix_pairs(2);
        // 8 pages, 4 per packet: 2 DATA packets + SYNC, then END.
        let before_end = 2 * (32 + 4 * 8 + 4 * 4096) + 32;
        let r1 = recv_ends.remove(1);
        recv_ends.push(Tamper::reads_until(
            r1,
            before_end,
            Then::Pause(Some(Duration::from_millis(1500))),
        ));
        let rx = Receiver::new(
            RecvConfig {
                idle_timeout: None,
                ..rejoining_config()
            },
            Destination::Memory { prefault: false },
        );
        let made = Arc::new(AtomicUsize::new(0));
        let config = SendConfig {
            packet_payload: 16 * 1024,
            idle_timeout: Some(Duration::from_millis(300)),
            reconnect: Some(socketpair_reconnect(
                rx.rejoin_handle(),
                Duration::from_secs(4),
                vec![],
                made.clone(),
            )),
            ..SendConfig::default()
        };
        let got = run_receiver(rx, recv_ends);
        let main = send.remove(0);
        let src = SourceImage::generate(&spec(8 * 4096, 0.0, 13)).unwrap();
        let sent = (|| {
            let mut tx = Sender::new(config, Payload::Image(src), main, send)?;
            tx.send_all()?;
            tx.finish()
        })();
        (sent, got.join().unwrap(), made.load(Ordering::SeqCst))
    });
    assert!(sent.is_ok(), "sender: {sent:?} (made {made})");
    assert!(got.is_ok(), "receiver: {:?}", got.err());
}

/// Control for (B): without reconnect, the same short appends work.
#[test]
fn short_stream_appends_work_without_reconnect() {
    assert_eq!(short_stream_appends(false), (true, true, 1000));
}

/// A connection that breaks while its channel has nothing to send (a pause
/// between passes longer than the receiver's wait) is noticed by the idle
/// sender within about a second and replaced, not left to the receiver's
/// wait running out.
#[test]
fn a_connection_broken_while_its_channel_is_idle_is_replaced_at_once() {
    let (sent, got, made) = bounded(60, || {
        let (mut send, recv_ends): (Chans, Chans) = unix_pairs(3);
        // The receiver's end of page channel 1, to break it later.
        let cut = recv_ends[2].shutdown_handle().expect("shutdown handle");
        let rx = Receiver::new(
            RecvConfig {
                reconnect_wait: Some(Duration::from_secs(2)),
                ..RecvConfig::default()
            },
            Destination::Memory { prefault: false },
        );
        let made = Arc::new(AtomicUsize::new(0));
        let config = SendConfig {
            reconnect: Some(socketpair_reconnect(
                rx.rejoin_handle(),
                Duration::from_secs(10),
                vec![],
                made.clone(),
            )),
            ..SendConfig::default()
        };
        let got = run_receiver(rx, recv_ends);
        let src = SourceImage::generate(&spec(4 << 20, 0.2, 21)).unwrap();
        let main = send.remove(0);
        let sent = (|| {
            let mut tx = Sender::new(config, Payload::Image(src), main, send)?;
            tx.send_all()?;
            // Between passes: page channel 1 breaks, and nothing is sent
            // for twice the receiver's wait.
            std::thread::sleep(Duration::from_millis(200));
            let _ = cut.shutdown(transit_channel::Shutdown::Both);
            std::thread::sleep(Duration::from_secs(4));
            tx.send_pass(0..16)?;
            tx.finish()
        })();
        (sent, got.join().expect("receiver thread"), made)
    });
    let sent = sent.expect("sender");
    got.expect("receiver");
    assert_eq!(made.load(Ordering::SeqCst), 1);
    assert_eq!(sent.reconnects, 1);
}
