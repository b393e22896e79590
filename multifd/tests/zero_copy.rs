//! Zero-copy sessions (`SendConfig::zero_copy`): over the in-process RDMA
//! model every page payload goes as a SEND gathered straight from the
//! registered image (the model counts those bytes), also across dirty
//! passes; a channel without zero-copy writes is refused at setup; over
//! loopback TCP with `MSG_ZEROCOPY` the session is correct and the flushes
//! report that the kernel copied.

mod common;

use common::*;
use transit_channel::rdma::model::{self, ModelConfig, ModelHandle, Side};
use transit_channel::rdma::RdmaConfig;
use transit_channel::{Channel, SocketAddress, SocketChannel};
use transit_multifd::image::SourceImage;
use transit_multifd::{Destination, Payload, RecvConfig, SendConfig, Sender, Stats};

fn zero_copy_config() -> SendConfig {
    SendConfig {
        zero_copy: true,
        ..SendConfig::default()
    }
}

/// A UNIX main channel plus `n` page channels over RDMA model pairs:
/// (sender ends with main first, receiver ends with main first, the
/// models' handles in page-channel order).
fn rdma_session_channels(n: usize) -> (Chans, Chans, Vec<ModelHandle>) {
    let (main_tx, main_rx) = SocketChannel::pair().expect("socketpair");
    let mut send: Chans = vec![Box::new(main_tx)];
    let mut recv: Chans = vec![Box::new(main_rx)];
    let mut handles = Vec::new();
    for i in 0..n {
        let (a, b, h) = model::pair(
            &format!("zc-{i}"),
            &ModelConfig::default(),
            &RdmaConfig::default(),
        )
        .expect("model pair");
        send.push(Box::new(a));
        recv.push(Box::new(b));
        handles.push(h);
    }
    (send, recv, handles)
}

/// Payload bytes the sending sides' SENDs gathered from registered user
/// memory (the image) rather than from the channels' own buffers.
fn gathered(handles: &[ModelHandle]) -> u64 {
    handles
        .iter()
        .map(|h| h.stats(Side::A).gathered_from_user_regions)
        .sum()
}

/// One full pass over `n` RDMA model page channels with zero copy.
fn rdma_full_pass(n: usize) -> (Stats, Vec<ModelHandle>) {
    let spec = spec(4 << 20, 0.3, 11);
    let source = SourceImage::generate(&spec).unwrap();
    let expected = source.as_slice().to_vec();
    let (mut send, recv, handles) = rdma_session_channels(n);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    let stats = bounded(60, move || {
        let mut tx = Sender::new(zero_copy_config(), Payload::Image(source), main, send).unwrap();
        tx.send_all().unwrap();
        tx.finish().unwrap()
    });
    let got = rx.join().unwrap().unwrap();
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    assert_eq!(stats.zero_pages, spec.zero_pages());
    (stats, handles)
}

#[test]
fn rdma_one_channel_sends_every_page_from_the_registered_image() {
    let (stats, handles) = rdma_full_pass(1);
    assert!(stats.bytes > 0);
    assert_eq!(gathered(&handles), stats.bytes);
    assert_eq!(handles[0].stats(Side::A).protection_errors, 0);
    // One flush before SYNC, one before END (nothing pending then).
    assert_eq!(stats.zero_copy_flushes, 1);
    assert_eq!(stats.zero_copy_copied, 0);
}

#[test]
fn rdma_three_channels_send_every_page_from_the_registered_image() {
    let (stats, handles) = rdma_full_pass(3);
    assert_eq!(gathered(&handles), stats.bytes);
    for (i, h) in handles.iter().enumerate() {
        assert!(
            h.stats(Side::A).gathered_from_user_regions > 0,
            "channel {i} sent nothing without a copy"
        );
        assert_eq!(h.stats(Side::A).protection_errors, 0);
    }
    assert_eq!(stats.zero_copy_flushes, 3);
    assert_eq!(stats.zero_copy_copied, 0);
}

#[test]
fn rdma_dirty_passes_converge_with_zero_copy() {
    let spec = spec(2 << 20, 0.4, 5);
    let pages = spec.pages();
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, recv, handles) = rdma_session_channels(3);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    let (final_source, stats) = bounded(60, move || {
        let mut tx = Sender::new(zero_copy_config(), Payload::Image(source), main, send).unwrap();
        tx.send_all().unwrap();
        for pass in 1..4u64 {
            let mut dirty = Vec::new();
            let img = tx.image_mut().unwrap();
            for p in 0..pages {
                let page = &mut img[(p * 4096) as usize..((p + 1) * 4096) as usize];
                match (p * 5 + pass * 3) % 8 {
                    0 => page.fill(0),
                    1 => page.fill((p as u8) ^ (pass as u8) | 1),
                    2 => page[(p as usize * 17) % 4096] ^= 0x5a,
                    _ => continue,
                }
                dirty.push(p);
            }
            tx.send_pass(dirty).unwrap();
        }
        let final_source = tx.image().unwrap().to_vec();
        (final_source, tx.finish().unwrap())
    });
    let got = rx.join().unwrap().unwrap();
    assert_eq!(stats.syncs, 4);
    assert!(got.image.unwrap().as_slice() == &final_source[..]);
    // Every pass's pages went from the image, changed between passes.
    assert!(stats.pages + stats.zero_pages > pages);
    assert_eq!(gathered(&handles), stats.bytes);
    assert_eq!(stats.zero_copy_copied, 0);
}

#[test]
fn zero_copy_on_a_channel_without_the_feature_fails_at_setup() {
    let spec = spec(1 << 20, 0.0, 3);
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, recv) = unix_pairs(3);
    let main = send.remove(0);
    let err = bounded(30, move || {
        Sender::new(zero_copy_config(), Payload::Image(source), main, send).unwrap_err()
    });
    drop(recv);
    let msg = err.to_string();
    assert!(msg.contains("zero-copy write"), "{msg}");
    assert!(msg.contains("multifd-send-0"), "{msg}");
    assert!(msg.contains("not supported"), "{msg}");
}

#[test]
fn zero_copy_needs_an_image_session() {
    let (mut send, _recv) = unix_pairs(2);
    let main = send.remove(0);
    let err = Sender::new(zero_copy_config(), Payload::Stream, main, send).unwrap_err();
    assert!(err.to_string().contains("image session"), "{err}");
}

#[test]
fn tcp_zero_copy_session_is_correct_and_loopback_flushes_report_copied() {
    let spec = spec(4 << 20, 0.2, 9);
    let source = SourceImage::generate(&spec).unwrap();
    let expected = source.as_slice().to_vec();
    // Main first, then three page channels with MSG_ZEROCOPY enabled.
    let addr: SocketAddress = "tcp:127.0.0.1:0".parse().unwrap();
    let mut listener = SocketChannel::listen_sync(&addr, 8).unwrap();
    let bound = listener.local_address().unwrap();
    let (mut send, mut recv): (Chans, Chans) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let mut client = SocketChannel::connect_sync(&bound).unwrap();
        if i > 0 {
            client.enable_zero_copy().unwrap();
        }
        send.push(Box::new(client));
        recv.push(Box::new(listener.accept().unwrap()));
    }
    let main = send.remove(0);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let stats = bounded(60, move || {
        let mut tx = Sender::new(zero_copy_config(), Payload::Image(source), main, send).unwrap();
        tx.send_all().unwrap();
        tx.finish().unwrap()
    });
    let got = rx.join().unwrap().unwrap();
    assert!(got.image.unwrap().as_slice() == &expected[..]);
    assert_eq!(stats.zero_copy_flushes, 3);
    assert_eq!(stats.zero_copy_copied, stats.zero_copy_flushes);
}
