//! A lost page channel does not lose the session (wire version 5): the
//! sender opens a new connection for it, the receiver says what it applied
//! last, and the rest is sent again. Connections break with
//! `transit_channel::fault::FailAfter` (after N bytes: reset, or a stall
//! the idle timeout cuts).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    bounded, rejoining_config, run_receiver, socketpair_reconnect, spec, unix_pairs, Chans,
    SharedSink,
};
use transit_channel::fault::FailAfter;
use transit_channel::Channel;
use transit_multifd::{
    compress::Compress, Destination, Payload, Receiver, RecvConfig, RecvOutcome,
    Result as MfResult, SendConfig, Sender, SourceImage, Stats,
};

/// Run a session over `n` page channels; `wrap` may replace the sender's
/// page channels (to break one). Returns both ends' results and how many
/// new connections were made.
/// What a session sends.
enum What {
    Image(SourceImage),
    Stream(Vec<u8>),
}

fn session(
    n: usize,
    wrap: impl Fn(usize, Box<dyn Channel>) -> Box<dyn Channel>,
    what: What,
    dest: Destination,
    mut config: SendConfig,
    plan: Vec<Option<u64>>,
    recv: RecvConfig,
) -> (MfResult<Stats>, MfResult<RecvOutcome>, usize) {
    let (mut send, recv_ends): (Chans, Chans) = unix_pairs(n + 1);
    let rx = Receiver::new(recv, dest);
    let made = Arc::new(AtomicUsize::new(0));
    if config.reconnect.is_none() {
        config.reconnect = Some(socketpair_reconnect(
            rx.rejoin_handle(),
            Duration::from_secs(10),
            plan,
            made.clone(),
        ));
    }
    let got = run_receiver(rx, recv_ends);
    let main = send.remove(0);
    let pages: Chans = send
        .into_iter()
        .enumerate()
        .map(|(i, c)| wrap(i, c))
        .collect();
    let sent = (|| match what {
        What::Image(img) => {
            let mut tx = Sender::new(config, Payload::Image(img), main, pages)?;
            tx.send_all()?;
            tx.finish()
        }
        What::Stream(data) => {
            let mut tx = Sender::new(config, Payload::Stream, main, pages)?;
            tx.send_stream(&mut &data[..])?;
            tx.finish()
        }
    })();
    let got = got.join().expect("receiver thread");
    (sent, got, made.load(Ordering::SeqCst))
}

fn image(size: u64, seed: u64) -> SourceImage {
    SourceImage::generate(&spec(size, 0.3, seed)).expect("image")
}

#[test]
fn a_page_channel_reset_mid_packet_is_replaced_and_the_image_arrives_whole() {
    let (sent, got, made) = bounded(60, || {
        let src = image(48 << 20, 1);
        let want = src.as_slice().to_vec();
        let (sent, got, made) = session(
            4,
            // Channel 2 breaks 3 MiB and a bit in: mid-packet.
            |i, c| {
                if i == 2 {
                    Box::new(FailAfter::new(c, (3 << 20) + 777))
                } else {
                    c
                }
            },
            What::Image(src),
            Destination::Memory { prefault: false },
            SendConfig {
                packet_payload: 256 * 1024,
                ..SendConfig::default()
            },
            vec![],
            rejoining_config(),
        );
        if let Ok(o) = &got {
            assert_eq!(o.image.as_ref().expect("image").as_slice(), &want[..]);
        }
        (sent, got, made)
    });
    let sent = sent.expect("sender");
    let got = got.expect("receiver");
    assert_eq!(made, 1);
    assert_eq!(sent.reconnects, 1);
    assert_eq!(got.stats.reconnects, 1);
    // Counted once each: the totals matched (else a side would fail), and
    // the pages add up to the image.
    assert_eq!(sent.pages + sent.zero_pages, (48 << 20) / 4096);
    assert_eq!(sent.digest, got.stats.digest);
}

#[test]
fn a_channel_lost_twice_and_a_file_destination_with_one_channel() {
    let dir = std::env::temp_dir().join(format!("transit-reconnect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("out.img");
    let p2 = path.clone();
    let (sent, got, made) = bounded(60, move || {
        let src = image(24 << 20, 2);
        let want = src.as_slice().to_vec();
        let (sent, got, made) = session(
            1,
            |_, c| Box::new(FailAfter::new(c, 5 << 20)),
            What::Image(src),
            Destination::File {
                path: p2.clone(),
                mode: None,
            },
            SendConfig::default(),
            // The first new connection breaks too, early.
            vec![Some(100_000)],
            rejoining_config(),
        );
        if got.is_ok() {
            assert_eq!(std::fs::read(&p2).expect("output"), want);
        }
        (sent, got, made)
    });
    let sent = sent.expect("sender");
    got.expect("receiver");
    assert_eq!(made, 2);
    assert_eq!(sent.reconnects, 2);
    assert!(path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_compressed_stream_survives_a_lost_channel_in_order() {
    // Half compressible (counters), half not (a xorshift), in 256 KiB runs.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..(40u64 << 20) / 8)
        .flat_map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i >> 15) % 2 == 0 {
                (i / 512).to_le_bytes()
            } else {
                x.to_le_bytes()
            }
        })
        .collect();
    let want = data.clone();
    let (sent, got, _) = bounded(60, move || {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = SharedSink(out.clone());
        let (sent, got, made) = session(
            3,
            |i, c| {
                if i == 1 {
                    Box::new(FailAfter::new(c, 1 << 20))
                } else {
                    c
                }
            },
            What::Stream(data),
            Destination::Writer(Box::new(sink)),
            SendConfig {
                compress: Compress::Zstd { level: 1 },
                ..SendConfig::default()
            },
            vec![],
            rejoining_config(),
        );
        if got.is_ok() {
            assert_eq!(*out.lock().unwrap(), want);
        }
        (sent, got, made)
    });
    assert_eq!(sent.expect("sender").reconnects, 1);
    got.expect("receiver");
}

#[test]
fn a_stalled_channel_is_cut_by_the_idle_timeout_and_replaced() {
    let (sent, got, made) = bounded(60, || {
        let src = image(16 << 20, 3);
        let want = src.as_slice().to_vec();
        let (sent, got, made) = session(
            2,
            |i, c| {
                if i == 0 {
                    Box::new(FailAfter::stall(c, 2 << 20))
                } else {
                    c
                }
            },
            What::Image(src),
            Destination::Memory { prefault: false },
            SendConfig {
                idle_timeout: Some(Duration::from_millis(500)),
                ..SendConfig::default()
            },
            vec![],
            RecvConfig {
                idle_timeout: Some(Duration::from_millis(500)),
                ..rejoining_config()
            },
        );
        if let Ok(o) = &got {
            assert_eq!(o.image.as_ref().expect("image").as_slice(), &want[..]);
        }
        (sent, got, made)
    });
    sent.expect("sender");
    got.expect("receiver");
    assert_eq!(made, 1);
}

#[test]
fn without_reconnect_a_lost_channel_still_fails_both_ends() {
    let (sent, got) = bounded(60, || {
        let (mut send, recv_ends) = unix_pairs(3);
        let got = std::thread::spawn(move || {
            let mut rx = Receiver::new(rejoining_config(), Destination::Memory { prefault: false });
            for ch in recv_ends {
                rx.accept_channel(ch)?;
            }
            rx.run()
        });
        let main = send.remove(0);
        let pages: Chans = send
            .into_iter()
            .map(|c| Box::new(FailAfter::new(c, 1 << 20)) as Box<dyn Channel>)
            .collect();
        let sent = (|| {
            let mut tx = Sender::new(
                SendConfig::default(),
                Payload::Image(image(8 << 20, 4)),
                main,
                pages,
            )?;
            tx.send_all()?;
            tx.finish()
        })();
        (sent, got.join().expect("receiver thread"))
    });
    assert!(sent.is_err());
    assert!(got.is_err());
}

#[test]
fn a_receiver_that_takes_no_rejoins_refuses_at_once() {
    let started = std::time::Instant::now();
    let (sent, got, made) = bounded(60, || {
        session(
            2,
            |i, c| {
                if i == 1 {
                    Box::new(FailAfter::new(c, 1 << 20))
                } else {
                    c
                }
            },
            What::Image(image(8 << 20, 5)),
            Destination::Memory { prefault: false },
            SendConfig::default(),
            vec![],
            RecvConfig::default(),
        )
    });
    assert!(sent.is_err(), "{sent:?}");
    assert!(got.is_err());
    assert!(made >= 1);
    // Refused, not retried until the 10 s window closed.
    assert!(started.elapsed() < Duration::from_secs(8));
}
