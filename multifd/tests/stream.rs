//! Stream mode: a non-mappable input sent as chunks with offsets and
//! written in order at the destination.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use common::*;
use transit_multifd::{Destination, Payload, RecvConfig, SendConfig, Sender};

/// A sink the test can read back after the receiver returns it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader that returns short reads (at most 1000 bytes), like a pipe.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(1000);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn data(len: usize) -> Vec<u8> {
    // Random-ish bytes with zero runs that fill whole chunks.
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..len)
        .map(|i| {
            if (i / 40_000) % 5 == 2 {
                return 0;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn stream_roundtrip(send: Chans, recv: Chans, input: Vec<u8>, chunk: u32) -> Vec<u8> {
    let sink = Shared::default();
    let out = sink.clone();
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Writer(Box::new(sink)),
    );
    let mut send = send;
    let main = send.remove(0);
    let n = send.len() as u64;
    let len = input.len() as u64;
    let (sent_len, stats) = bounded(60, move || {
        let config = SendConfig {
            packet_payload: chunk,
            ..SendConfig::default()
        };
        let mut tx = Sender::new(config, Payload::Stream, main, send).unwrap();
        let sent = tx.send_stream(&mut Trickle(&input)).unwrap();
        (sent, tx.finish().unwrap())
    });
    let got = rx.join().unwrap().unwrap();
    assert_eq!(sent_len, len);
    assert_eq!(stats.stream_len, len);
    assert_eq!(got.stats.stream_len, len);
    assert_eq!(got.stats.digest, stats.digest);
    assert!(
        stats.peak_buffers <= 2 * n,
        "sender used {} buffers",
        stats.peak_buffers
    );
    assert!(
        got.stats.peak_buffers <= 2 * n,
        "receiver used {} buffers",
        got.stats.peak_buffers
    );
    let v = out.0.lock().unwrap().clone();
    v
}

#[test]
fn unix_stream_with_a_partial_last_chunk_and_zero_chunks() {
    let input = data(3 * 1024 * 1024 + 12_345);
    let (send, recv) = unix_pairs(4);
    let out = stream_roundtrip(send, recv, input.clone(), 10_000);
    assert!(out == input, "stream differs");
}

#[test]
fn tcp_stream_one_channel() {
    let input = data(1024 * 1024 + 1);
    let (send, recv) = tcp_pairs(2);
    let out = stream_roundtrip(send, recv, input.clone(), 64 * 1024);
    assert!(out == input, "stream differs");
}

#[test]
fn empty_stream() {
    let (send, recv) = unix_pairs(3);
    assert!(stream_roundtrip(send, recv, Vec::new(), 4096).is_empty());
}

#[test]
fn zero_chunks_travel_without_payload() {
    let input = vec![0u8; 256 * 1024];
    let (mut send, recv) = unix_pairs(3);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Writer(Box::new(Shared::default())),
    );
    let main = send.remove(0);
    let stats = bounded(30, move || {
        let config = SendConfig {
            packet_payload: 32 * 1024,
            ..SendConfig::default()
        };
        let mut tx = Sender::new(config, Payload::Stream, main, send).unwrap();
        tx.send_stream(&mut &input[..]).unwrap();
        tx.finish().unwrap()
    });
    rx.join().unwrap().unwrap();
    assert_eq!((stats.pages, stats.zero_pages, stats.bytes), (0, 8, 0));
}

#[test]
fn image_sender_and_stream_receiver_both_fail_clearly() {
    let (mut send, recv) = unix_pairs(2);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Writer(Box::new(Shared::default())),
    );
    let main = send.remove(0);
    let err = bounded(30, move || {
        let img = transit_multifd::SourceImage::from_vec(vec![1; 8192]);
        Sender::new(SendConfig::default(), Payload::Image(img), main, send).unwrap_err()
    });
    let rerr = rx.join().unwrap().unwrap_err();
    assert!(rerr.to_string().contains("byte stream"), "{rerr}");
    assert!(err.to_string().contains("byte stream"), "{err}");
    assert_eq!(err.stage(), Some(transit_multifd::Stage::Handshake));
}

/// A decider that picks memory for an image and the shared sink for a
/// stream, recording what it was asked.
fn decider(sink: Shared, seen: Arc<Mutex<Vec<String>>>) -> Destination {
    Destination::Decide(Box::new(move |h| {
        Ok(match h.layout {
            transit_multifd::wire::Layout::Image { size } => {
                seen.lock().unwrap().push(format!("image {size}"));
                Destination::Memory { prefault: false }
            }
            transit_multifd::wire::Layout::Stream => {
                seen.lock().unwrap().push("stream".into());
                Destination::Writer(Box::new(sink))
            }
        })
    }))
}

#[test]
fn a_receiver_decides_its_destination_from_the_session_header() {
    // A stream: the decider gives the writer.
    let (mut send, mut recv) = unix_pairs(3);
    recv.reverse(); // page channels before the main one
    let (sink, seen) = (Shared::default(), Arc::new(Mutex::new(Vec::new())));
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        decider(sink.clone(), seen.clone()),
    );
    let main = send.remove(0);
    let input = data(300_000);
    let sent = input.clone();
    bounded(60, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Stream, main, send).unwrap();
        tx.send_stream(&mut Trickle(&sent)).unwrap();
        tx.finish().unwrap()
    });
    rx.join().unwrap().unwrap();
    assert_eq!(*sink.0.lock().unwrap(), input);
    // An image: the decider gives memory of the header's size.
    let (mut send, recv) = unix_pairs(3);
    let rx = spawn_receiver(recv, RecvConfig::default(), decider(sink, seen.clone()));
    let main = send.remove(0);
    let image: Vec<u8> = (0..64 * 4096u32).map(|i| (i % 251) as u8).collect();
    let img = transit_multifd::SourceImage::from_vec(image.clone());
    bounded(60, move || {
        let mut tx = Sender::new(SendConfig::default(), Payload::Image(img), main, send).unwrap();
        tx.send_all().unwrap();
        tx.finish().unwrap()
    });
    let got = rx.join().unwrap().unwrap();
    assert_eq!(got.image.unwrap().as_slice(), &image[..]);
    assert_eq!(*seen.lock().unwrap(), ["stream", "image 262144"]);
}

#[test]
fn a_deciders_refusal_is_what_the_sender_hears() {
    let (mut send, recv) = unix_pairs(2);
    let refuse = Destination::Decide(Box::new(|_| {
        Err(transit_multifd::Error::Config(
            "this receiver takes images only".into(),
        ))
    }));
    let rx = spawn_receiver(recv, RecvConfig::default(), refuse);
    let main = send.remove(0);
    let err = bounded(30, move || {
        Sender::new(SendConfig::default(), Payload::Stream, main, send).unwrap_err()
    });
    let rerr = rx.join().unwrap().unwrap_err();
    assert!(rerr.to_string().contains("images only"), "{rerr}");
    assert!(err.to_string().contains("images only"), "{err}");
}
