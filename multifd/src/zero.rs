//! Zero-page detection.
//!
//! [`is_zero`] answers "is every byte zero?" at memory bandwidth: it ORs
//! 256-byte blocks as eight `u64` lanes per 64 bytes (a loop the compiler
//! turns into vector ORs, AVX2 ones where the CPU has them) and stops at
//! the first non-zero block, so a page
//! of data usually costs a few loads while a zero page costs one pass.
//!
//! # Example
//!
//! ```
//! use transit_multifd::zero::is_zero;
//!
//! let mut page = vec![0u8; 4096];
//! assert!(is_zero(&page));
//! page[4095] = 1;
//! assert!(!is_zero(&page));
//! ```

const BLOCK: usize = 256;

/// True if every byte of `buf` is zero (an empty slice is zero).
///
/// Where the CPU has AVX2 (checked at run time) the same loop runs in
/// 256-bit vectors.
#[inline]
pub fn is_zero(buf: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { is_zero_avx2(buf) };
    }
    is_zero_lanes(buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn is_zero_avx2(buf: &[u8]) -> bool {
    is_zero_lanes(buf)
}

#[inline(always)]
fn is_zero_lanes(buf: &[u8]) -> bool {
    // Most data pages have a non-zero byte near the start: look there first.
    if let Some(head) = buf.get(..16) {
        if or_lanes(head) != 0 {
            return false;
        }
    }
    let mut blocks = buf.chunks_exact(BLOCK);
    for block in &mut blocks {
        if or_block(block) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().fold(0u8, |a, &b| a | b) == 0
}

/// OR of a 256-byte block as u64 lanes; written so it vectorizes.
#[inline(always)]
fn or_block(block: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in block.chunks_exact(64) {
        for (lane, word) in acc.iter_mut().zip(chunk.chunks_exact(8)) {
            *lane |= u64::from_ne_bytes(word.try_into().unwrap_or([0; 8]));
        }
    }
    acc.iter().fold(0, |a, &b| a | b)
}

#[inline(always)]
fn or_lanes(b: &[u8]) -> u64 {
    b.chunks_exact(8)
        .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])))
        .fold(0, |a, w| a | w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU can run: the dispatched one and the portable
    /// one (which is what CPUs without AVX2 get).
    type Kernel = fn(&[u8]) -> bool;

    fn kernels() -> [(&'static str, Kernel); 2] {
        [("is_zero", is_zero), ("portable", is_zero_lanes)]
    }

    #[test]
    fn finds_any_nonzero_byte_at_any_position_and_length() {
        for (name, f) in kernels() {
            for len in [0usize, 1, 7, 15, 16, 17, 255, 256, 257, 1000, 4096, 4097] {
                let mut v = vec![0u8; len];
                assert!(f(&v), "{name} len {len}");
                for pos in 0..len {
                    v[pos] = 0x80;
                    assert!(!f(&v), "{name} len {len} pos {pos}");
                    v[pos] = 0;
                }
            }
        }
    }
}
