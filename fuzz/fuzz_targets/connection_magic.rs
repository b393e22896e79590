//! Fuzz `classify`, the first decoder a receiver runs on every new
//! connection (its first four bytes): never panic, and accept exactly the
//! two magics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transit_multifd::wire::{self, ConnectionKind};

fuzz_target!(|data: &[u8]| {
    match wire::classify(data) {
        Ok(ConnectionKind::Main) => assert_eq!(&data[..4], b"TRSM"),
        Ok(ConnectionKind::Page) => assert_eq!(&data[..4], b"TRSP"),
        Err(_) => assert!(data.len() < 4 || (&data[..4] != b"TRSM" && &data[..4] != b"TRSP")),
    }
});
