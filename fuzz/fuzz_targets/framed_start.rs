//! Fuzz `framed_start`, which a `--raw` receiver runs on the first bytes
//! of every connection to tell a framed transit peer from plain bytes:
//! never panic, ask for more bytes only beyond what it has, and never
//! change a decided answer when more bytes follow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire::{self, FramedStart};

fuzz_target!(|data: &[u8]| {
    match wire::framed_start(data) {
        FramedStart::NeedMore(n) => assert!(n > data.len()),
        decided => {
            let mut more = data.to_vec();
            more.extend_from_slice(&[0xa5; 16]);
            assert_eq!(wire::framed_start(&more), decided);
        }
    }
});
