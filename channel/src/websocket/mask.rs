//! Frame masking (RFC 6455 section 5.3) and unpredictable mask keys.

use std::io;

/// The key as a 64-bit word starting at key byte `phase`.
#[inline(always)]
fn key_word(key: [u8; 4], phase: usize) -> ([u8; 8], u64) {
    let mut pat = [0u8; 8];
    for (i, p) in pat.iter_mut().enumerate() {
        *p = key[(phase + i) & 3];
    }
    (pat, u64::from_ne_bytes(pat))
}

/// XOR `buf` with `key`, starting at byte `phase` of the key (the number of
/// payload bytes already processed, mod 4). Returns the phase after `buf`.
///
/// Works on 8-byte words, in 512-bit vectors where the CPU has AVX-512F
/// and 256-bit ones where it has AVX2 (checked at run time; the same loop
/// is compiled three times). On the development VM, unmasking a cache-hot
/// 256 KiB frame takes 0.027 s/GB with AVX-512 against 0.037 with AVX2.
pub(crate) fn apply(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { apply_avx512(buf, key, phase) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { apply_avx2(buf, key, phase) };
    }
    apply_words(buf, key, phase)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn apply_avx512(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    apply_words(buf, key, phase)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn apply_avx2(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    apply_words(buf, key, phase)
}

#[inline(always)]
fn apply_words(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let (pat, word) = key_word(key, phase);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the pattern still lines up.
    for (b, p) in chunks.into_remainder().iter_mut().zip(pat) {
        *b ^= p;
    }
    (phase + buf.len()) & 3
}

/// Append `src` XOR `key` (from key byte `phase`) to `dst` in one pass
/// (no separate copy and mask passes). Returns the phase after `src`.
/// AVX-512F or AVX2 where the CPU has it, as [`apply`] (AVX-512 measured
/// faster: `docs/benchmarks.md`).
pub(crate) fn extend_masked(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4], phase: usize) -> usize {
    dst.reserve(src.len());
    let start = dst.len();
    let out = dst.spare_capacity_mut()[..src.len()]
        .as_mut_ptr()
        .cast::<u8>();
    #[cfg(target_arch = "x86_64")]
    let next = if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; `out` has room for `src.len()`
        // bytes (reserved above) and does not overlap `src` (it is `dst`'s
        // own spare capacity).
        unsafe { masked_copy_avx512(src, out, key, phase) }
    } else if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; `out` has room for `src.len()` bytes
        // (reserved above) and does not overlap `src` (it is `dst`'s own
        // spare capacity).
        unsafe { masked_copy_avx2(src, out, key, phase) }
    } else {
        // SAFETY: as above, without the AVX2 requirement.
        unsafe { masked_copy(src, out, key, phase) }
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above.
    let next = unsafe { masked_copy(src, out, key, phase) };
    // SAFETY: the copy initialized all `src.len()` bytes of spare capacity
    // after `start`, and `reserve` made room for them.
    unsafe { dst.set_len(start + src.len()) };
    next
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn masked_copy_avx512(src: &[u8], out: *mut u8, key: [u8; 4], phase: usize) -> usize {
    // SAFETY: the caller's contract is masked_copy's.
    unsafe { masked_copy(src, out, key, phase) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn masked_copy_avx2(src: &[u8], out: *mut u8, key: [u8; 4], phase: usize) -> usize {
    // SAFETY: the caller's contract is masked_copy's.
    unsafe { masked_copy(src, out, key, phase) }
}

/// # Safety
/// `out` is valid for `src.len()` byte writes and does not overlap `src`.
#[inline(always)]
unsafe fn masked_copy(src: &[u8], out: *mut u8, key: [u8; 4], phase: usize) -> usize {
    let (pat, word) = key_word(key, phase);
    let words = src.len() / 8;
    for i in 0..words {
        // SAFETY: i * 8 + 8 <= src.len(); `out` holds src.len() bytes.
        unsafe {
            let w = std::ptr::read_unaligned(src.as_ptr().add(i * 8).cast::<u64>());
            std::ptr::write_unaligned(out.add(i * 8).cast::<u64>(), w ^ word);
        }
    }
    for (i, p) in (words * 8..src.len()).zip(pat) {
        // SAFETY: i < src.len(), inside both buffers.
        unsafe { out.add(i).write(src[i] ^ p) };
    }
    (phase + src.len()) & 3
}

/// Mask keys from the kernel's random source, fetched 64 at a time so a
/// frame costs no system call.
#[derive(Debug)]
pub(crate) struct KeyPool {
    bytes: [u8; 256],
    used: usize,
}

impl KeyPool {
    pub(crate) fn new() -> KeyPool {
        KeyPool {
            bytes: [0; 256],
            used: 256,
        }
    }

    /// The next key. Fails only if the kernel's random source fails.
    pub(crate) fn next(&mut self) -> io::Result<[u8; 4]> {
        if self.used + 4 > self.bytes.len() {
            crate::random::fill(&mut self.bytes)?;
            self.used = 0;
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&self.bytes[self.used..self.used + 4]);
        self.used += 4;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], phase: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(phase + i) % 4];
        }
    }

    #[test]
    fn matches_bytewise_masking_at_every_phase_and_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for phase in 0..4 {
            for len in (0..40).chain([255, 4096, 70_001]) {
                let orig: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37)).collect();
                let (mut a, mut b) = (orig.clone(), orig.clone());
                let next = apply(&mut a, key, phase);
                naive(&mut b, key, phase);
                assert_eq!(a, b, "phase {phase} len {len}");
                assert_eq!(next, (phase + len) % 4);
            }
        }
    }

    #[test]
    fn split_masking_equals_one_pass() {
        let key = [9, 8, 7, 6];
        let orig: Vec<u8> = (0..100u8).collect();
        let mut whole = orig.clone();
        apply(&mut whole, key, 0);
        let mut parts = orig;
        let (a, b) = parts.split_at_mut(13);
        let p = apply(a, key, 0);
        apply(b, key, p);
        assert_eq!(whole, parts);
    }

    /// The portable loops (what CPUs without AVX2 run) agree with the
    /// bytewise definition too.
    #[test]
    fn portable_loops_match_bytewise_masking() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for phase in 0..4 {
            for len in [0usize, 3, 8, 13, 4096, 70_001] {
                let src: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
                let mut want = src.clone();
                naive(&mut want, key, phase);
                let mut inplace = src.clone();
                assert_eq!(apply_words(&mut inplace, key, phase), (phase + len) & 3);
                assert_eq!(inplace, want, "apply_words phase {phase} len {len}");
                let mut out = vec![0u8; len];
                // SAFETY: `out` holds `len` bytes and is a separate buffer.
                let next = unsafe { masked_copy(&src, out.as_mut_ptr(), key, phase) };
                assert_eq!(next, (phase + len) & 3);
                assert_eq!(out, want, "masked_copy phase {phase} len {len}");
            }
        }
    }

    /// Each vector build this CPU can run agrees with the bytewise
    /// definition, so the AVX2 build stays tested on AVX-512 machines.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_vector_build_matches_bytewise_masking() {
        type Apply = unsafe fn(&mut [u8], [u8; 4], usize) -> usize;
        type Copy = unsafe fn(&[u8], *mut u8, [u8; 4], usize) -> usize;
        let mut builds: Vec<(&str, Apply, Copy)> = Vec::new();
        if std::arch::is_x86_feature_detected!("avx2") {
            builds.push(("avx2", apply_avx2, masked_copy_avx2));
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            builds.push(("avx512", apply_avx512, masked_copy_avx512));
        }
        let key = [0x5a, 0x01, 0xc3, 0x7e];
        for (name, apply_v, copy_v) in builds {
            for phase in 0..4 {
                for len in [0usize, 5, 8, 63, 64, 65, 255, 256, 257, 4096, 70_001] {
                    let src: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
                    let mut want = src.clone();
                    naive(&mut want, key, phase);
                    let mut inplace = src.clone();
                    // SAFETY: the CPU has the build's features (checked above).
                    let next = unsafe { apply_v(&mut inplace, key, phase) };
                    assert_eq!(
                        (inplace == want, next),
                        (true, (phase + len) & 3),
                        "{name} apply phase {phase} len {len}"
                    );
                    let mut out = vec![0u8; len];
                    // SAFETY: as above; `out` holds `len` bytes, separate from `src`.
                    let next = unsafe { copy_v(&src, out.as_mut_ptr(), key, phase) };
                    assert_eq!(
                        (out == want, next),
                        (true, (phase + len) & 3),
                        "{name} copy phase {phase} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn extend_masked_matches_copy_then_mask() {
        let key = [1, 2, 3, 250];
        for phase in 0..4 {
            for len in [0usize, 1, 7, 8, 9, 31, 100, 4095, 70_001] {
                let src: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let mut want = src.clone();
                naive(&mut want, key, phase);
                let mut got = vec![42u8];
                let next = extend_masked(&mut got, &src, key, phase);
                assert_eq!(&got[1..], &want[..]);
                assert_eq!(next, (phase + len) & 3);
            }
        }
    }

    #[test]
    fn keys_differ() {
        let mut pool = KeyPool::new();
        let keys: Vec<[u8; 4]> = (0..200).map(|_| pool.next().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert!(distinct.len() > 190);
    }
}
