//! The dirty pattern of live-migration passes (`--passes N --dirty-ratio R`).
//!
//! Before pass `p` (2..=N) page `i` is re-dirtied when a hash of
//! (seed, p, i) falls below the ratio, so the pattern is the same on every
//! run with the same seed and a test can rebuild the final image. A
//! re-dirtied page gets `p` and `i` written into its first 16 bytes (a
//! zero page becomes a normal page), except every eighth one, which is
//! cleared to zeros (a normal page becomes a zero page), so both
//! directions are exercised.
//!
//! ```
//! let mut image = vec![0u8; 16 * 4096];
//! let dirtied = transit_multifd::dirty::dirty_image(&mut image, 4096, 0.5, 7, 2);
//! assert!(!dirtied.is_empty());
//! assert_eq!(dirtied, transit_multifd::dirty::dirty_pages(16, 0.5, 7, 2));
//! ```

/// The pages re-dirtied before pass `pass`, in increasing order.
pub fn dirty_pages(pages: u64, ratio: f64, seed: u64, pass: u32) -> Vec<u64> {
    if ratio <= 0.0 {
        return Vec::new();
    }
    let threshold = if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * u64::MAX as f64) as u64
    };
    let key = seed ^ (u64::from(pass) << 40) ^ 0xd1b5_4a32_d192_ed03;
    (0..pages)
        .filter(|&i| ratio >= 1.0 || mix(key ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) < threshold)
        .collect()
}

/// Re-dirty `image` for pass `pass` and return the pages changed.
pub fn dirty_image(
    image: &mut [u8],
    page_size: usize,
    ratio: f64,
    seed: u64,
    pass: u32,
) -> Vec<u64> {
    let pages = image.len().div_ceil(page_size.max(1)) as u64;
    let list = dirty_pages(pages, ratio, seed, pass);
    for (k, &i) in list.iter().enumerate() {
        let start = i as usize * page_size;
        let end = (start + page_size).min(image.len());
        let page = &mut image[start..end];
        if k % 8 == 7 {
            page.fill(0);
        } else {
            let mut mark = [0u8; 16];
            mark[..8].copy_from_slice(&u64::from(pass).to_le_bytes());
            mark[8..].copy_from_slice(&(i | 1 << 63).to_le_bytes());
            let n = mark.len().min(page.len());
            page[..n].copy_from_slice(&mark[..n]);
        }
    }
    list
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_bounds_are_exact() {
        assert!(dirty_pages(100, 0.0, 1, 2).is_empty());
        assert_eq!(dirty_pages(100, 1.0, 1, 2).len(), 100);
    }

    #[test]
    fn passes_differ_and_repeat() {
        let a = dirty_pages(10_000, 0.1, 3, 2);
        let b = dirty_pages(10_000, 0.1, 3, 3);
        assert_ne!(a, b);
        assert_eq!(a, dirty_pages(10_000, 0.1, 3, 2));
        assert!((800..1200).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn dirtying_changes_pages_both_ways() {
        let mut img = vec![0u8; 64 * 512];
        img[..512].fill(9);
        let list = dirty_image(&mut img, 512, 1.0, 1, 2);
        assert_eq!(list.len(), 64);
        assert!(img[7 * 512..8 * 512].iter().all(|&b| b == 0));
        assert!(img[512..528].iter().any(|&b| b != 0));
    }
}
