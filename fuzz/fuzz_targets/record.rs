//! Fuzz main-channel records (sync, end, verdict, error, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_record(data);
    if let Ok(h) = wire::decode_record_header(data) {
        let _ = wire::decode_record_body(&h, data.get(wire::RECORD_HEADER_LEN..).unwrap_or(&[]));
    }
});
