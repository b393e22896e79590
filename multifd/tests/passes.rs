//! Live-migration passes: after pass 1 the test dirties pages (data over
//! data, zeros over data, data over zeros) and sends only those; the final
//! destination must equal the final source.

mod common;

use common::*;
use transit_multifd::image::SourceImage;
use transit_multifd::{Destination, Payload, RecvConfig, SendConfig, Sender};

#[test]
fn dirty_passes_converge_to_the_final_source() {
    let spec = spec(2 << 20, 0.4, 42);
    let pages = spec.pages();
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, mut recv) = unix_pairs(4);
    recv.rotate_left(2);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    let (final_source, stats) = bounded(60, move || {
        let mut tx =
            Sender::new(SendConfig::default(), Payload::Image(source), main, send).unwrap();
        tx.send_all().unwrap();
        for pass in 1..4u64 {
            let mut dirty = Vec::new();
            let img = tx.image_mut().unwrap();
            for p in 0..pages {
                let page = &mut img[(p * 4096) as usize..((p + 1) * 4096) as usize];
                match (p * 7 + pass * 13) % 10 {
                    // Zeros over whatever was there.
                    0 | 1 => page.fill(0),
                    // New data.
                    2 => page.fill((p as u8) ^ (pass as u8) | 1),
                    // One byte changed.
                    3 => page[(p as usize * 31) % 4096] ^= 0xa5,
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
    assert_eq!(got.stats.syncs, 4);
    assert!(got.image.unwrap().as_slice() == &final_source[..]);
    // Pass 1 sent every page; later passes 40 % of them each.
    assert!(stats.pages + stats.zero_pages > pages * 2);
}

#[test]
fn pages_out_of_order_are_refused() {
    let spec = spec(1 << 20, 0.0, 1);
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
        let err = tx.send_pass([3, 2]).unwrap_err();
        assert!(err.to_string().contains("must increase"), "{err}");
        let err = tx.send_pass([1 << 40]).unwrap_err();
        assert!(err.to_string().contains("below"), "{err}");
        // The session is still usable.
        tx.send_all().unwrap();
        tx.finish().unwrap();
    });
    rx.join().unwrap().unwrap();
}

#[test]
fn a_read_only_source_cannot_be_changed_between_passes() {
    static DATA: [u8; 8192] = [7; 8192];
    let (mut send, recv) = unix_pairs(2);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    bounded(30, move || {
        let mut tx = Sender::new(
            SendConfig::default(),
            Payload::Image(SourceImage::from_static(&DATA)),
            main,
            send,
        )
        .unwrap();
        assert!(tx.image_mut().is_err());
        tx.send_all().unwrap();
        tx.finish().unwrap();
    });
    assert_eq!(
        rx.join().unwrap().unwrap().image.unwrap().as_slice(),
        &DATA[..]
    );
}
