//! Frame masking (RFC 6455 section 5.3) and unpredictable mask keys.

use std::io;

/// XOR `buf` with `key`, starting at byte `phase` of the key (the number of
/// payload bytes already processed, mod 4). Returns the phase after `buf`.
///
/// Works on 8-byte words; the compiler vectorizes the loop.
pub(crate) fn apply(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let mut pat = [0u8; 8];
    for (i, p) in pat.iter_mut().enumerate() {
        *p = key[(phase + i) & 3];
    }
    let word = u64::from_ne_bytes(pat);
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
pub(crate) fn extend_masked(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4], phase: usize) -> usize {
    let mut pat = [0u8; 8];
    for (i, p) in pat.iter_mut().enumerate() {
        *p = key[(phase + i) & 3];
    }
    let word = u64::from_ne_bytes(pat);
    let start = dst.len();
    dst.reserve(src.len());
    let spare = &mut dst.spare_capacity_mut()[..src.len()];
    let mut s = src.chunks_exact(8);
    let mut d = spare.chunks_exact_mut(8);
    for (sc, dc) in (&mut s).zip(&mut d) {
        let mut w = [0u8; 8];
        w.copy_from_slice(sc);
        let v = (u64::from_ne_bytes(w) ^ word).to_ne_bytes();
        for (o, b) in dc.iter_mut().zip(v) {
            o.write(b);
        }
    }
    for ((o, b), p) in d.into_remainder().iter_mut().zip(s.remainder()).zip(pat) {
        o.write(b ^ p);
    }
    // SAFETY: the loops above initialized all `src.len()` bytes of spare
    // capacity after `start` (chunks plus remainder cover the slice), and
    // `reserve` made room for them.
    unsafe { dst.set_len(start + src.len()) };
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
            fill_random(&mut self.bytes)?;
            self.used = 0;
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&self.bytes[self.used..self.used + 4]);
        self.used += 4;
        Ok(key)
    }
}

/// Fill `buf` from `getrandom(2)`.
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes
        // for the duration of the call; getrandom writes at most that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        done += n as usize;
    }
    Ok(())
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
            for len in 0..40 {
                let orig: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
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

    #[test]
    fn extend_masked_matches_copy_then_mask() {
        let key = [1, 2, 3, 250];
        for phase in 0..4 {
            for len in [0usize, 1, 7, 8, 9, 31, 100] {
                let src: Vec<u8> = (0..len as u8).collect();
                let mut want = src.clone();
                apply(&mut want, key, phase);
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
