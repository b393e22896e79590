//! Fuzz the session header decoder: never panic, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = wire::decode_session_header(data) {
        let again = wire::decode_session_header(&h.encode()).expect("re-decode");
        assert_eq!(h, again);
    }
});
