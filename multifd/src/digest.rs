//! The session digest: an order-independent fold of per-page hashes.
//!
//! Each page (or stream chunk) contributes `page_hash(offset, bytes)`: the
//! CRC-64/NVME of the bytes mixed with the offset, so moving a page or
//! changing one byte changes its contribution. A zero page sent as an
//! offset only contributes [`zero_hash`]`(offset, len)`, a constant per
//! offset that needs no memory read; both sides classify a page the same
//! way (the receiver learns it from the wire), so they agree.
//!
//! Contributions are added with wrapping addition ([`Digest::add`]), so
//! channels can fold their pages in any order and the session digest is
//! the wrapping sum of the per-channel digests.
//!
//! The digest catches corruption and misplaced pages; it is not a
//! cryptographic MAC (use TLS against an attacker). CRC-64 finds every
//! error burst up to 64 bits and misses a random corruption with
//! probability 2^-64.
//!
//! Why a CRC: it is the cheapest strong per-page check on current CPUs.
//! `crc-fast` picks a carry-less-multiply kernel at run time (VPCLMULQDQ
//! on AVX-512, PCLMULQDQ elsewhere) and measured faster than XXH3, the
//! hash of version 1 of the wire protocol (figures in
//! `docs/benchmarks.md`). Each side hashes a page while it is in cache: the sender
//! right after the kernel copied it into the socket, the receiver right
//! after reading it into place.
//!
//! # Example
//!
//! ```
//! use transit_multifd::digest::{page_hash, zero_hash, Digest};
//!
//! let (a, b) = (vec![1u8; 4096], vec![2u8; 4096]);
//! let mut d1 = Digest::default();
//! d1.add(page_hash(0, &a));
//! d1.add(page_hash(4096, &b));
//! d1.add(zero_hash(8192, 4096));
//! let mut d2 = Digest::default();
//! d2.add(zero_hash(8192, 4096));
//! d2.add(page_hash(4096, &b));
//! d2.add(page_hash(0, &a));
//! assert_eq!(d1, d2);
//! assert_ne!(page_hash(0, &a), page_hash(4096, &a));
//! ```

use crc_fast::{checksum, CrcAlgorithm};

/// Final avalanche of SplitMix64 / Murmur3 style: every input bit affects
/// every output bit.
#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const OFFSET_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
const ZERO_SALT: u64 = 0xd6e8_feb8_6659_fd93;

/// CRC-64/NVME (reflected polynomial 0x9a6c9329ac4bc9b5, initial value
/// and final xor all ones), as the wire protocol defines it.
#[inline]
pub fn crc64(data: &[u8]) -> u64 {
    checksum(CrcAlgorithm::Crc64Nvme, data)
}

/// Hash of the page (or chunk) `data` at byte `offset`.
#[inline]
pub fn page_hash(offset: u64, data: &[u8]) -> u64 {
    mix(crc64(data) ^ mix(offset.wrapping_add(OFFSET_SALT)))
}

/// Hash of a zero page (or zero chunk) of `len` bytes at `offset`, sent
/// without payload.
#[inline]
pub fn zero_hash(offset: u64, len: u32) -> u64 {
    mix(mix(offset ^ ZERO_SALT).wrapping_add(u64::from(len)))
}

/// An order-independent digest: the wrapping sum of contributions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Digest(pub u64);

impl Digest {
    /// Fold one contribution in.
    #[inline]
    pub fn add(&mut self, h: u64) {
        self.0 = self.0.wrapping_add(h);
    }

    /// Fold another digest in (per-channel digests into the session's).
    #[inline]
    pub fn merge(&mut self, other: Digest) {
        self.add(other.0)
    }

    /// Take back a contribution folded in before (a packet sent again
    /// over a new connection is counted once).
    #[inline]
    pub fn unmerge(&mut self, other: Digest) {
        self.0 = self.0.wrapping_sub(other.0);
    }

    /// The value.
    pub fn value(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flipped_bit_changes_the_hash() {
        let mut page = vec![0x5au8; 4096];
        let h = page_hash(8192, &page);
        page[1234] ^= 1;
        assert_ne!(h, page_hash(8192, &page));
    }

    /// The digest is part of the wire protocol: the CRC must give the
    /// catalogue's check value whatever kernel computes it, and every
    /// kernel must agree with a plain bitwise CRC on unaligned lengths.
    #[test]
    fn crc64_matches_the_reference() {
        assert_eq!(crc64(b"123456789"), 0xae8b_1486_0a79_9888);
        let bitwise = |data: &[u8]| {
            let mut crc = u64::MAX;
            for &b in data {
                crc ^= u64::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0x9a6c_9329_ac4b_c9b5
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        };
        let data: Vec<u8> = (0..9000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [0, 1, 15, 16, 63, 64, 255, 256, 4095, 4096, 4097, 9000] {
            assert_eq!(crc64(&data[..len]), bitwise(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn zero_hash_differs_by_offset_and_from_data_hash() {
        assert_ne!(zero_hash(0, 4096), zero_hash(4096, 4096));
        assert_ne!(zero_hash(0, 4096), page_hash(0, &[0u8; 4096]));
    }
}
