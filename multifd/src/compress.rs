//! Per-packet zstd compression ([`SendConfig::compress`](crate::SendConfig::compress)).
//!
//! Each page channel compresses its own packets on its own thread, with a
//! compression context it reuses: the normal pages of a packet (or a
//! stream chunk) become one zstd frame, sent with
//! [`PacketFlags::COMPRESSED`](crate::wire::PacketFlags::COMPRESSED) when
//! it is smaller than the raw data, raw otherwise (random data costs one
//! failed attempt per packet, which [`Compress::Auto`] avoids). Zero pages
//! are elided before compression as always; the digest is over the raw
//! pages on both sides; the receiver decompresses into the destination (a
//! packet whose pages are contiguous straight into place).
//!
//! [`Compress::Auto`] lets each channel measure, on its own link and core,
//! what a byte costs sent raw (the time its write took) and compressed
//! (compression plus the write of the frame), as moving averages, and send
//! each packet compressed only when that is clearly cheaper (under
//! [`PREFER`] of the raw cost: the receiver's decompression is not in the
//! sender's measurement). Every [`PROBE_EVERY`]th packet goes the
//! other way (less often while probes keep confirming the choice, down to
//! one in [`MAX_PROBE_EVERY`]), so a link that became faster or slower, or
//! data that became more or less compressible, is noticed. On a fast link (loopback) writes
//! are cheaper than compressing, so it sends raw; on a slow one
//! compressible data goes compressed.
//!
//! ```
//! use transit_multifd::compress::{Compress, Packer};
//!
//! let mut p = Packer::new(Compress::Zstd { level: 1 });
//! let text = b"a line of text that repeats\n".repeat(1000);
//! let frame = p.compress(&text).expect("text shrinks").to_vec();
//! assert!(frame.len() < text.len() / 10);
//! let mut out = vec![0u8; text.len()];
//! transit_multifd::compress::decompress(&frame, &mut out).unwrap();
//! assert_eq!(out, text);
//! ```

use std::time::Duration;

/// What a sender does with its packets' payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    /// Raw (the default).
    #[default]
    Off,
    /// Every data packet is compressed with zstd at `level` (sent raw when
    /// the frame would not be smaller).
    Zstd {
        /// zstd level (1 fastest; negative levels are faster still).
        level: i32,
    },
    /// Each channel compresses only while that is faster on its link and
    /// core (see the module docs), with zstd at `level`.
    Auto {
        /// zstd level.
        level: i32,
    },
}

impl Compress {
    /// True unless [`Compress::Off`].
    pub fn is_on(self) -> bool {
        !matches!(self, Compress::Off)
    }
}

/// In [`Compress::Auto`], every this many packets one goes the way the
/// averages do not favour, to keep both estimates current; each probe that
/// confirms the choice doubles the interval, up to [`MAX_PROBE_EVERY`],
/// and one that changes it starts again from here.
pub const PROBE_EVERY: u64 = 64;

/// The longest interval between probes in [`Compress::Auto`].
pub const MAX_PROBE_EVERY: u64 = 1024;

/// In [`Compress::Auto`], compression wins only when a byte costs less
/// than this fraction of its raw cost (when the costs are close, as on
/// loopback, raw spares the receiver's CPU the decompression).
pub const PREFER: f64 = 0.5;

/// Weight of a new measurement in the moving averages.
const ALPHA: f64 = 0.2;

/// One page channel's compressor: a reused zstd context, its output
/// buffer, a staging buffer for packets of several runs, and the
/// [`Compress::Auto`] measurements.
pub struct Packer {
    mode: Compress,
    ctx: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
    /// Pages of a packet gathered into one input (several runs).
    pub stage: Vec<u8>,
    packets: u64,
    /// Seconds per raw byte sent raw (write time), moving average.
    raw_cost: Option<f64>,
    /// Seconds per raw byte sent compressed (compress + write), moving
    /// average.
    packed_cost: Option<f64>,
    /// Seconds the compression of the packet being sent took (whether it
    /// shrank or not): the packet counts as "sent compressed" for auto.
    attempt: Option<f64>,
    /// Length of the last frame in `out`.
    frame_len: usize,
    /// Packets between probes now, and since the last one.
    probe_every: u64,
    since_probe: u64,
    /// The choice when the last probe went out (its measurement decides
    /// at the next packet whether the interval grows or starts again).
    probed: Option<bool>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer")
            .field("mode", &self.mode)
            .field("raw_cost", &self.raw_cost)
            .field("packed_cost", &self.packed_cost)
            .finish()
    }
}

impl Packer {
    /// A packer for `mode` (nothing is allocated for [`Compress::Off`]).
    pub fn new(mode: Compress) -> Packer {
        let level = match mode {
            Compress::Off => None,
            Compress::Zstd { level } | Compress::Auto { level } => Some(level),
        };
        Packer {
            mode,
            ctx: level.and_then(|l| zstd::bulk::Compressor::new(l).ok()),
            out: Vec::new(),
            stage: Vec::new(),
            packets: 0,
            raw_cost: None,
            packed_cost: None,
            attempt: None,
            frame_len: 0,
            probe_every: PROBE_EVERY,
            since_probe: 0,
            probed: None,
        }
    }

    /// Should the next packet be compressed? (Counts the packet.)
    pub fn want(&mut self) -> bool {
        self.packets += 1;
        match self.mode {
            Compress::Off => false,
            Compress::Zstd { .. } => self.ctx.is_some(),
            Compress::Auto { .. } => {
                if self.ctx.is_none() {
                    return false;
                }
                // Measure both ways first, then follow the cheaper one,
                // probing the other now and then.
                let (Some(raw), Some(packed)) = (self.raw_cost, self.packed_cost) else {
                    return self.packed_cost.is_none();
                };
                // Compressing must be clearly cheaper: its cost on the
                // receiver (decompression) and on the other channels'
                // cores is not in this channel's measurement.
                let better = packed < raw * PREFER;
                if let Some(was) = self.probed.take() {
                    self.probe_every = if was == better {
                        (self.probe_every * 2).min(MAX_PROBE_EVERY)
                    } else {
                        PROBE_EVERY
                    };
                }
                self.since_probe += 1;
                if self.since_probe >= self.probe_every {
                    self.since_probe = 0;
                    self.probed = Some(better);
                    !better
                } else {
                    better
                }
            }
        }
    }

    /// Compress `data` into one frame; `None` if the frame would not be
    /// smaller than `data` (then send it raw).
    pub fn compress(&mut self, data: &[u8]) -> Option<&[u8]> {
        let ctx = self.ctx.as_mut()?;
        let t = std::time::Instant::now();
        self.out.clear();
        self.out
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        let r = ctx.compress_to_buffer(data, &mut self.out);
        self.attempt = Some(t.elapsed().as_secs_f64());
        // Not smaller: it goes raw (the attempt still counts against
        // compressing).
        let n = r.ok().filter(|&n| n < data.len())?;
        self.frame_len = n;
        Some(&self.out[..n])
    }

    /// The frame the last successful [`compress`](Self::compress) made.
    pub fn frame(&self) -> &[u8] {
        &self.out[..self.frame_len]
    }

    /// Record a sent packet of `raw_len` data bytes and how long its write
    /// took. If [`compress`](Self::compress) was tried for it, it counts
    /// as compressed (compression plus write), even if it went raw.
    pub fn sent(&mut self, raw_len: usize, write: Duration) {
        let attempt = self.attempt.take();
        if raw_len == 0 {
            return;
        }
        let per_byte = (write.as_secs_f64() + attempt.unwrap_or(0.0)) / raw_len as f64;
        let slot = if attempt.is_some() {
            &mut self.packed_cost
        } else {
            &mut self.raw_cost
        };
        *slot = Some(match *slot {
            None => per_byte,
            Some(old) => old + ALPHA * (per_byte - old),
        });
    }
}

/// Decompress one frame into exactly `out` (its length is the raw data's).
pub fn decompress(frame: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut d = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
    decompress_with(&mut d, frame, out)
}

/// [`decompress`] with a reused context.
pub fn decompress_with(
    d: &mut zstd::bulk::Decompressor<'static>,
    frame: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    let want = out.len();
    match d.decompress_to_buffer(frame, out) {
        Ok(n) if n == want => Ok(()),
        Ok(n) => Err(format!("it gave {n} bytes")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_data_goes_raw_and_text_compressed() {
        let mut p = Packer::new(Compress::Zstd { level: 1 });
        let mut x = 7u64;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(p.compress(&random).is_none());
        let text = b"0123456789abcdef".repeat(4096);
        let frame = p.compress(&text).unwrap().to_vec();
        let mut out = vec![0u8; text.len()];
        decompress(&frame, &mut out).unwrap();
        assert_eq!(out, text);
        // A frame that does not fill the buffer exactly is refused.
        let mut short = vec![0u8; text.len() + 1];
        assert!(decompress(&frame, &mut short).is_err());
        assert!(decompress(b"not a frame", &mut out).is_err());
    }

    #[test]
    fn auto_follows_the_cheaper_way_and_probes_the_other() {
        let mut p = Packer::new(Compress::Auto { level: 1 });
        // First packet: try compressed; second: raw.
        assert!(p.want());
        p.attempt = Some(0.000_01);
        p.sent(1000, Duration::from_micros(10));
        assert!(!p.want());
        // Raw is 10x dearer (a slow link): compress, but probe raw at the
        // 64th packet, then (the probe confirmed it) 128 later, then 256.
        p.sent(1000, Duration::from_micros(200));
        let raw: Vec<usize> = (1..=500).filter(|_| !p.want()).collect();
        assert_eq!(raw, [64, 192, 448]);
        // The link got fast: raw measured much cheaper, auto follows at
        // once (no compressed probe within the next 128: the interval grew
        // to 512 while probes confirmed compressing).
        for _ in 0..30 {
            p.sent(1000, Duration::from_nanos(100));
        }
        let compressed = (0..128).filter(|_| p.want()).count();
        assert_eq!(compressed, 0);
    }
}
