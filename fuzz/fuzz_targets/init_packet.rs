//! Fuzz the page-channel init packet decoder and its session checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire::{self, Compression, Layout, SessionHeader};

fuzz_target!(|data: &[u8]| {
    let _ = wire::classify(data);
    if let Ok(p) = wire::decode_init_packet(data) {
        let session = SessionHeader {
            version: wire::VERSION,
            uuid: [0x11; 16],
            page_size: 4096,
            channels: 4,
            layout: Layout::Image { size: 1 << 20 },
            compression: Compression::None,
            verify: true,
            packet_payload: 512 * 1024,
            data_bytes: 0,
        };
        let _ = p.check(&session);
    }
});
