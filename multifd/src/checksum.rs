//! `--checksum sha256`: a digest of the payload that people can compare
//! with standard tools (`sha256sum FILE` at either end).
//!
//! transit verifies every session with its own order-independent 64-bit
//! digest ([`crate::digest`]), computed per page on the worker
//! threads while the data is in cache. SHA-256 needs the bytes in order, so
//! it is computed where they are in order:
//!
//! * streams and `--raw` (send and recv): on the fly, as the bytes pass
//!   through in order (no second pass);
//! * images: pages travel out of order over N channels, so the sender hashes
//!   its source after the last pass and the receiver its destination once
//!   verified (memory, or the file once in place). Holes of a sparse file are
//!   hashed as zeros without being read. This is a second pass over data in
//!   memory or the page cache with a hash much slower than the per-page
//!   CRC of the transfer, which is why it is asked for, not the default.
//!
//! Each side computes it when asked on that side (`send --checksum sha256`,
//! `recv --checksum sha256`), prints it in its summary (`sha256 HEX`) and in
//! its JSON (`"sha256": "HEX"`).
//!
//! ```
//! let mut h = transit_multifd::checksum::Sha256::new();
//! h.update(b"abc");
//! assert_eq!(
//!     h.finish(),
//!     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
//! );
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::copy::{CopyError, Sink};

/// A running SHA-256.
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Sha256 {
        Sha256::new()
    }
}

impl Sha256 {
    /// An empty digest.
    pub fn new() -> Sha256 {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// Add `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Add `n` zero bytes.
    pub fn update_zeros(&mut self, mut n: u64) {
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.0.update(&ZEROS[..k]);
            n -= k as u64;
        }
    }

    /// The digest in lower-case hex, as `sha256sum` prints it.
    pub fn finish(self) -> String {
        let d = self.0.finish();
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256")
    }
}

/// SHA-256 of `data`.
pub fn of_bytes(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// SHA-256 of a file's bytes, reading only its data: holes (`SEEK_DATA`)
/// are hashed as zeros without being read.
pub fn of_file(path: &Path) -> io::Result<String> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let (data, end) = next_extent(&f, pos, len);
        h.update_zeros(data - pos);
        let mut at = data;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let n = f.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while it was hashed", path.display()),
                ));
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
        pos = end;
    }
    Ok(h.finish())
}

/// The next run of data at or after `pos`: `(start, end)`; `(len, len)`
/// when only a hole is left. A file system without `SEEK_DATA` is all data.
fn next_extent(f: &File, pos: u64, len: u64) -> (u64, u64) {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: lseek on our open fd; no memory is touched.
    let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            (len, len)
        } else {
            (pos, len)
        };
    }
    let data = (data as u64).min(len);
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
    let end = if hole < 0 {
        len
    } else {
        (hole as u64).min(len)
    };
    (data, end.max(data))
}

/// SHA-256 of an image, skipping (hashing as zeros) the given holes:
/// `extents` are the runs of data as byte ranges `(start, end)` in order,
/// as [`SourceImage::data_extents`](crate::SourceImage::data_extents) gives them; `None` =
/// all data.
pub fn of_image(image: &[u8], extents: Option<&[(u64, u64)]>) -> String {
    let mut h = Sha256::new();
    match extents {
        None => h.update(image),
        Some(ext) => {
            let mut pos = 0u64;
            for &(start, end) in ext {
                let (start, end) = (start.max(pos), end.min(image.len() as u64));
                if end <= start {
                    continue;
                }
                h.update_zeros(start - pos);
                h.update(&image[start as usize..end as usize]);
                pos = end;
            }
            h.update_zeros(image.len() as u64 - pos);
        }
    }
    h.finish()
}

/// A shared running digest: one side feeds it (a reader or a writer that
/// moved into the session), the other takes the result at the end.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<Option<Sha256>>>);

impl Shared {
    /// A fresh digest.
    pub fn new() -> Shared {
        Shared(Arc::new(Mutex::new(Some(Sha256::new()))))
    }

    fn update(&self, data: &[u8]) {
        if let Some(h) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            h.update(data);
        }
    }

    /// The digest of everything fed so far (once; later calls give `None`).
    pub fn finish(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(Sha256::finish)
    }
}

/// A reader that hashes what it reads.
pub struct Reading<R> {
    inner: R,
    hash: Shared,
}

impl<R> Reading<R> {
    /// Hash what `inner` gives into `hash`.
    pub fn new(inner: R, hash: Shared) -> Reading<R> {
        Reading { inner, hash }
    }
}

impl<R: Read> Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what it writes.
pub struct Writing<W> {
    inner: W,
    hash: Shared,
}

impl<W> Writing<W> {
    /// Hash what goes to `inner` into `hash`.
    pub fn new(inner: W, hash: Shared) -> Writing<W> {
        Writing { inner, hash }
    }
}

impl<W: Write> Write for Writing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A [`Sink`] that hashes what it is given (`--raw` copies).
pub struct HashSink<'a> {
    inner: &'a mut dyn Sink,
    hash: &'a mut Sha256,
}

impl<'a> HashSink<'a> {
    /// Hash what goes to `inner` into `hash`.
    pub fn new(inner: &'a mut dyn Sink, hash: &'a mut Sha256) -> HashSink<'a> {
        HashSink { inner, hash }
    }
}

impl Sink for HashSink<'_> {
    fn put(&mut self, buf: &[u8]) -> Result<(), CopyError> {
        self.hash.update(buf);
        self.inner.put(buf)
    }
    fn put_zeros(&mut self, buf: &[u8]) -> Result<(), CopyError> {
        self.hash.update(buf);
        self.inner.put_zeros(buf)
    }
    fn done(&mut self) -> Result<(), CopyError> {
        self.inner.done()
    }
}

/// Run `f` on `sink`, hashing what it writes when `hash` is given.
pub fn through<R>(
    sink: &mut dyn Sink,
    hash: Option<&mut Sha256>,
    f: impl FnOnce(&mut dyn Sink) -> R,
) -> R {
    match hash {
        Some(h) => f(&mut HashSink::new(sink, h)),
        None => f(sink),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn matches_the_standard_vectors() {
        assert_eq!(of_bytes(b""), EMPTY);
        assert_eq!(
            of_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn holes_hash_as_the_zeros_they_read_as() {
        let mut img = vec![0u8; 3 << 16];
        img[70_000..70_010].copy_from_slice(b"0123456789");
        img[150_000] = 7;
        let all = of_bytes(&img);
        assert_eq!(of_image(&img, None), all);
        assert_eq!(
            of_image(&img, Some(&[(65_536, 131_072), (131_072, 196_608)])),
            all
        );
        let dir = std::env::temp_dir().join(format!("transit-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(img.len() as u64).unwrap();
        f.write_all_at(&img[65_536..131_072], 65_536).unwrap();
        f.write_all_at(&img[131_072..], 131_072).unwrap();
        drop(f);
        assert_eq!(of_file(&p).unwrap(), all);
        let empty = dir.join("empty");
        File::create(&empty).unwrap();
        assert_eq!(of_file(&empty).unwrap(), EMPTY);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readers_and_writers_hash_what_passes() {
        let h = Shared::new();
        let mut r = Reading::new(&b"hello world"[..], h.clone());
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(h.finish().unwrap(), of_bytes(b"hello world"));
        let h = Shared::new();
        let mut w = Writing::new(Vec::new(), h.clone());
        w.write_all(b"hello").unwrap();
        assert_eq!(h.finish().unwrap(), of_bytes(b"hello"));
    }
}
