//! Fuzz page packets: the fixed header, then the page offsets or hole
//! ranges (image sessions) or the stream entry (stream sessions) that
//! follow it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire::{self, Compression, Layout, SessionHeader};

fuzz_target!(|data: &[u8]| {
    let image = SessionHeader {
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
    let mut stream = image;
    stream.layout = Layout::Stream;
    let mut offsets = Vec::new();
    for s in [image, stream] {
        let Ok(h) = wire::decode_packet_header(data, &s) else {
            continue;
        };
        let rest = &data[wire::PACKET_HEADER_LEN.min(data.len())..];
        if h.flags == wire::PacketFlags::HOLES {
            let mut ranges = Vec::new();
            let _ = wire::decode_hole_ranges(rest, &h, &s, &mut ranges);
            continue;
        }
        match s.layout {
            Layout::Image { .. } => {
                let _ = wire::decode_page_offsets(rest, &h, &s, &mut offsets);
            }
            Layout::Stream => {
                let _ = wire::decode_stream_entry(rest, &h, &s);
            }
        }
    }
});
