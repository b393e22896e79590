//! Fuzz the decoder of what a receiver writes back on a page channel
//! (acknowledgements, a rejoin's resume point or refusal).
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = wire::decode_page_reply(data) {
        assert_eq!(wire::decode_page_reply(&r.encode()), Ok(r));
    }
});
