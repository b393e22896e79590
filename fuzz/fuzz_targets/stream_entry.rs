//! Fuzz the stream entry decoder directly, whatever packet header came
//! before it. Input: byte 0 (bit 0 set: a zero chunk), bytes 1..5 the
//! header's payload length, then the 16-byte entry. A decoded chunk is
//! never empty, never longer than a packet's payload, and carries exactly
//! its payload (none for a zero chunk).
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire::{self, Compression, Layout, PacketFlags, PacketHeader, SessionHeader};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let zero = data[0] & 1 == 1;
    let payload_len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
    let session = SessionHeader {
        version: wire::VERSION,
        uuid: [0x11; 16],
        page_size: 4096,
        channels: 4,
        layout: Layout::Stream,
        compression: Compression::None,
        verify: true,
        packet_payload: 65536,
    };
    let hdr = PacketHeader {
        flags: PacketFlags::DATA,
        packet_num: 1,
        normal: u32::from(!zero),
        zero: u32::from(zero),
        payload_len,
        epoch: 0,
    };
    if let Ok(e) = wire::decode_stream_entry(&data[5..], &hdr, &session) {
        assert!(e.len > 0 && e.len <= session.packet_payload);
        assert_eq!(e.zero, zero);
        assert_eq!(payload_len, if zero { 0 } else { e.len });
    }
});
