//! `SendConfig::max_bandwidth`: one budget for all page channels. The
//! session cannot be faster than the cap (minus the 25 ms burst), the data
//! arrives intact, and slow caps get small packets. Upper bounds of speed
//! are the benchmark script's business (`scripts/bench-bandwidth.sh`):
//! timed upper bounds flake on a loaded machine.

mod common;

use std::time::{Duration, Instant};

use common::*;
use transit_multifd::image::SourceImage;
use transit_multifd::{Payload, SendConfig, Sender};

const CAP: u64 = 12 << 20;

#[test]
fn an_image_over_4_channels_goes_no_faster_than_the_cap() {
    let spec = spec(6 << 20, 0.0, 77);
    let source = SourceImage::generate(&spec).unwrap();
    let expected = source.as_slice().to_vec();
    let (send, recv) = unix_pairs(5);
    let config = SendConfig {
        max_bandwidth: Some(CAP),
        ..SendConfig::default()
    };
    let t0 = Instant::now();
    let (sent, got) = bounded(60, move || image_roundtrip(send, recv, source, config));
    let took = t0.elapsed();
    let (sent, got) = (sent.unwrap(), got.unwrap());
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    // 6 MiB at 12 MiB/s is 0.5 s; the burst lets 25 ms go early.
    assert!(took >= Duration::from_millis(380), "took {took:?}");
    // Packets were cut to 25 ms of the rate: 300 KiB, i.e. 75 pages.
    let most = sent.pages.div_ceil(sent.packets.max(1));
    assert!(sent.packets >= 20, "{} packets", sent.packets);
    assert!(most <= 80, "{most} pages a packet");
}

#[test]
fn a_stream_goes_no_faster_than_the_cap() {
    let input = pattern(6 << 20);
    let (mut send, recv) = tcp_pairs(3);
    let (rx, out) = spawn_stream_receiver(recv);
    let main = send.remove(0);
    let data = input.clone();
    let t0 = Instant::now();
    bounded(60, move || {
        let config = SendConfig {
            max_bandwidth: Some(CAP),
            ..SendConfig::default()
        };
        let mut tx = Sender::new(config, Payload::Stream, main, send).unwrap();
        tx.send_stream(&mut &data[..]).unwrap();
        tx.finish().unwrap()
    });
    let took = t0.elapsed();
    rx.join().unwrap().unwrap();
    assert!(*out.0.lock().unwrap() == input);
    assert!(took >= Duration::from_millis(380), "took {took:?}");
}
