//! Delta transfer: send only what the receiver's older copy lacks
//! ([`RecvConfig::delta`](crate::RecvConfig::delta)).
//!
//! A receiver that already holds a version of the image (the file at its
//! output path) hashes it in chunks while it copies it into its temporary
//! output (a clone where the file system shares blocks), and answers the
//! session's accept with a
//! [`Record::Have`](crate::wire::Record::Have): one hash per chunk. The
//! sender hashes the same chunks of its image and sends the pages of
//! differing chunks as usual; pages of matching chunks go as
//! [`KEEP`](crate::wire::PacketFlags::KEEP) ranges, 16 bytes a run. Both
//! sides fold every kept page's `page_hash` into the session digest (the
//! sender from its image, the receiver from its copy), so the end-to-end
//! verification covers kept pages as it covers sent ones: a chunk that only
//! hashed equal fails the session rather than leaving a wrong file.
//!
//! Chunks are `page_size * 2^k` bytes, the smallest such size that gives at
//! most [`crate::wire::MAX_HAVE_CHUNKS`] chunks (one page
//! per chunk for images up to 4 GiB of 4 KiB pages), so a change of one
//! page costs one chunk. Hashing runs on every core on both sides.
//!
//! Where the output goes: by default a new file next to the older copy,
//! renamed over it once verified (atomic: the path holds the old file or
//! the new one, never a mix). Without block sharing (ext4, tmpfs) that
//! new file costs a copy of the whole older one, however small the delta.
//! With [`RecvConfig::inplace`](crate::RecvConfig::inplace) the older copy
//! is hashed where it lies and the differing pages are written into it,
//! each write's old contents saved first in an undo journal
//! ([`crate::undo`]): a failure rolls the file back, a crash is rolled back
//! by the next receive on the path, so the file is never left mixed once a
//! receiver is done with it; while the session runs, its readers see a mix.
//! The wire is the same either way.
//!
//! Limits: the kept pages are verified by hashes of the older copy taken
//! before the transfer; a copy that changes meanwhile fails the session
//! (checked at the commit by inode, size and times) when it is copied, and
//! must not be written by others at all when it is updated in place.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::digest::page_hash;
use crate::wire::MAX_HAVE_CHUNKS;

/// The chunk size for an image of `size` bytes and `page_size` pages.
pub fn chunk_size_for(size: u64, page_size: u32) -> u32 {
    let mut chunk = u64::from(page_size);
    while size.div_ceil(chunk) > u64::from(MAX_HAVE_CHUNKS) && chunk < (1 << 31) {
        chunk *= 2;
    }
    chunk as u32
}

/// The hash of the chunk `data` at byte `offset`.
pub fn chunk_hash(offset: u64, data: &[u8]) -> u64 {
    page_hash(offset, data)
}

/// Run `f(first, end)` over `n` items split into one contiguous range per
/// core, collecting the results in order.
fn in_parallel<T: Send>(n: usize, f: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1));
    let per = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (a, b) = ((t * per).min(n), ((t + 1) * per).min(n));
                s.spawn(move || f(a, b))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hash thread"))
            .collect()
    })
}

/// Hash the first `len` bytes of `file` in chunks of `chunk_size` (the
/// last one short), on every core.
pub fn hash_file(file: &File, len: u64, chunk_size: u32) -> io::Result<Vec<u64>> {
    hash_file_into(file, len, chunk_size, None)
}

/// [`hash_file`], also writing what it read into `copy` at the same
/// offsets (blocks of zeros are skipped, so holes stay holes in a `copy`
/// that starts sparse): one read of the older copy serves both the hashes
/// and the new output.
pub fn hash_file_into(
    file: &File,
    len: u64,
    chunk_size: u32,
    copy: Option<&File>,
) -> io::Result<Vec<u64>> {
    let chunk = u64::from(chunk_size);
    let n = len.div_ceil(chunk) as usize;
    // Read in blocks of whole chunks (about 1 MiB): one pread per block,
    // not one per 4 KiB chunk.
    let per_block = (((1u64 << 20) / chunk).max(1)) as usize;
    let parts = in_parallel(n, |a, b| -> io::Result<Vec<u64>> {
        let mut buf = vec![0u8; per_block * chunk_size as usize];
        let mut out = Vec::with_capacity(b - a);
        let mut i = a;
        while i < b {
            let k = per_block.min(b - i);
            let off = i as u64 * chunk;
            let l = (k as u64 * chunk).min(len - off) as usize;
            file.read_exact_at(&mut buf[..l], off)?;
            for (j, piece) in buf[..l].chunks(chunk_size as usize).enumerate() {
                out.push(chunk_hash(off + j as u64 * chunk, piece));
            }
            if let Some(c) = copy {
                if !crate::zero::is_zero(&buf[..l]) {
                    c.write_all_at(&buf[..l], off)?;
                }
            }
            i += k;
        }
        Ok(out)
    });
    let mut all = Vec::with_capacity(n);
    for p in parts {
        all.extend(p?);
    }
    Ok(all)
}

/// Which chunks of the image the receiver already has.
#[derive(Debug, Clone)]
pub struct Keep {
    chunk_size: u64,
    same: Vec<bool>,
    /// The receiver's hashes: with one page per chunk, a kept page's hash
    /// for the digest is its chunk's (equal to the image's), no second
    /// read of the page.
    hashes: Vec<u64>,
}

impl Keep {
    /// Compare the receiver's `hashes` with the image's chunks (on every
    /// core). Chunks wholly inside holes of `extents` are not hashed (the
    /// sender sends holes as ranges anyway) and never kept.
    pub fn compare(
        image: &[u8],
        extents: Option<&[(u64, u64)]>,
        chunk_size: u32,
        hashes: Vec<u64>,
    ) -> Keep {
        let chunk = u64::from(chunk_size);
        let len = image.len() as u64;
        let n = (len.div_ceil(chunk) as usize).min(hashes.len());
        let has_data = |off: u64, end: u64| {
            extents.is_none_or(|ext| ext.iter().any(|&(s, e)| s < end && e > off))
        };
        let parts = in_parallel(n, |a, b| {
            (a..b)
                .map(|i| {
                    let off = i as u64 * chunk;
                    let end = (off + chunk).min(len);
                    has_data(off, end)
                        && chunk_hash(off, &image[off as usize..end as usize]) == hashes[i]
                })
                .collect::<Vec<bool>>()
        });
        Keep {
            chunk_size: chunk,
            same: parts.into_iter().flatten().collect(),
            hashes,
        }
    }

    /// The `page_hash` of the kept page at `offset` when chunks are
    /// `page_size` bytes (the compared chunk hash is that very value);
    /// `None` otherwise.
    pub fn page_hash(&self, offset: u64, page_size: u32) -> Option<u64> {
        if self.chunk_size != u64::from(page_size) || !self.has(offset) {
            return None;
        }
        self.hashes
            .get((offset / self.chunk_size) as usize)
            .copied()
    }

    /// True if the page at `offset` lies in a chunk the receiver has.
    pub fn has(&self, offset: u64) -> bool {
        self.same
            .get((offset / self.chunk_size) as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Chunks the receiver has.
    pub fn kept_chunks(&self) -> usize {
        self.same.iter().filter(|&&s| s).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_pages_until_there_are_too_many() {
        assert_eq!(chunk_size_for(1 << 30, 4096), 4096);
        assert_eq!(chunk_size_for(4 << 30, 4096), 4096);
        assert_eq!(chunk_size_for(64 << 30, 4096), 65536);
        assert_eq!(chunk_size_for(0, 4096), 4096);
    }

    #[test]
    fn compare_finds_the_changed_chunks() {
        let old: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[5000] ^= 1; // chunk 1 of 4096-byte chunks
        new[40_000] ^= 1; // chunk 9
        let dir = std::env::temp_dir().join(format!("transit-delta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("old");
        std::fs::write(&p, &old).unwrap();
        let hashes = hash_file(&File::open(&p).unwrap(), old.len() as u64, 4096).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(hashes.len(), 16);
        let k = Keep::compare(&new, None, 4096, hashes.clone());
        let kept: Vec<usize> = (0..16).filter(|&i| k.has(i as u64 * 4096)).collect();
        assert_eq!(kept.len(), 14);
        assert!(!k.has(4096) && !k.has(9 * 4096));
        // A longer image: chunks past the receiver's copy are not kept.
        let mut longer = new.clone();
        longer.extend_from_slice(&[1u8; 8192]);
        let k = Keep::compare(&longer, None, 4096, hashes.clone());
        assert!(!k.has(16 * 4096) && !k.has(17 * 4096));
        // Holes are never kept.
        let k = Keep::compare(&new, Some(&[(0, 8192)]), 4096, hashes);
        assert!(k.has(0) && !k.has(2 * 4096));
    }
}
