//! Property tests against the simplest oracle: whatever the image, zero
//! ratio, page size, packet size, channel count and dirty pattern, the
//! destination ends equal to the final source and both sides agree on the
//! totals.

mod common;

use common::*;
use proptest::prelude::*;
use transit_multifd::image::{Content, ImageSpec, SourceImage};
use transit_multifd::{Destination, Payload, RecvConfig, SendConfig, Sender};

#[derive(Debug, Clone)]
struct Case {
    pages: u64,
    tail: u64,
    page_size: u32,
    packet_pages: u32,
    zero_ratio: f64,
    channels: usize,
    seed: u64,
    /// Per pass: (page, action) with action 0 = zero it, 1 = new data.
    passes: Vec<Vec<(u64, u8)>>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u64..200,
        0u64..2,
        prop_oneof![Just(512u32), Just(4096u32)],
        1u32..40,
        0.0f64..=1.0,
        1usize..5,
        any::<u64>(),
    )
        .prop_flat_map(
            |(pages, tail, page_size, packet_pages, zero_ratio, channels, seed)| {
                let pass = proptest::collection::vec((0..pages, 0u8..2), 0..40);
                proptest::collection::vec(pass, 0..3).prop_map(move |passes| Case {
                    pages,
                    tail,
                    page_size,
                    packet_pages,
                    zero_ratio,
                    channels,
                    seed,
                    passes,
                })
            },
        )
}

fn run(c: Case) {
    let size = c.pages * u64::from(c.page_size) - c.tail * 100;
    let spec = ImageSpec {
        size,
        page_size: c.page_size,
        zero_ratio: c.zero_ratio,
        seed: c.seed,
        content: Content::Compressible,
    };
    let source = SourceImage::generate(&spec).unwrap();
    let (mut send, mut recv) = unix_pairs(c.channels + 1);
    recv.rotate_left((c.seed % (c.channels as u64 + 1)) as usize);
    let rx = spawn_receiver(
        recv,
        RecvConfig::default(),
        Destination::Memory { prefault: false },
    );
    let main = send.remove(0);
    let config = SendConfig {
        page_size: c.page_size,
        packet_payload: c.page_size * c.packet_pages,
        ..SendConfig::default()
    };
    let passes = c.passes.clone();
    let ps = u64::from(c.page_size);
    let (final_source, stats) = bounded(60, move || {
        let mut tx = Sender::new(config, Payload::Image(source), main, send).unwrap();
        tx.send_all().unwrap();
        for (n, pass) in passes.into_iter().enumerate() {
            let img = tx.image_mut().unwrap();
            let mut dirty: Vec<u64> = pass.iter().map(|p| p.0).collect();
            for (p, action) in pass {
                let start = (p * ps) as usize;
                let end = (start + ps as usize).min(img.len());
                match action {
                    0 => img[start..end].fill(0),
                    _ => img[start..end].fill((n as u8) * 16 + 1),
                }
            }
            dirty.sort_unstable();
            dirty.dedup();
            tx.send_pass(dirty).unwrap();
        }
        let f = tx.image().unwrap().to_vec();
        (f, tx.finish().unwrap())
    });
    let got = rx.join().unwrap().unwrap();
    assert!(
        got.image.unwrap().as_slice() == &final_source[..],
        "destination differs"
    );
    assert_eq!(got.stats.digest, stats.digest);
    assert_eq!(
        got.stats.pages + got.stats.zero_pages,
        stats.pages + stats.zero_pages
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn destination_equals_final_source(c in case()) {
        run(c);
    }
}
