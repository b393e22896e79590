//! The multifd wire format, version 5 ([`VERSION`]; see
//! `docs/wire-protocol.md` for what changed in each version): encoders and
//! slice-based decoders.
//!
//! A session is one *main* channel plus N *page* channels. All integers
//! are big-endian; every structure has a fixed layout (the full
//! specification with diagrams is `docs/wire-protocol.md`):
//!
//! | what | where | size |
//! |---|---|---|
//! | [`SessionHeader`] (magic `TRSM`) | first bytes of the main channel | 64 |
//! | [`InitPacket`] (magic `TRSP`) | first bytes of each page channel | 32 |
//! | [`PacketHeader`] (magic `TRPK`) + entries + payload | page channels | 32 + 8 or 16 per entry |
//! | [`Record`] (kind, length, body) | main channel, both directions | 8 + body |
//!
//! Every decoder takes a byte slice and returns a [`WireError`] for any
//! input it does not accept; none panics, whatever the bytes (the
//! `decode_corpus` test and the fuzz targets hold them to that).
//!
//! # Example
//!
//! ```
//! use transit_multifd::wire::{decode_session_header, Compression, Layout, SessionHeader, VERSION};
//!
//! let hdr = SessionHeader {
//!     version: VERSION,
//!     uuid: [7; 16],
//!     page_size: 4096,
//!     channels: 4,
//!     layout: Layout::Image { size: 1 << 20 },
//!     compression: Compression::None,
//!     verify: true,
//!     packet_payload: 512 * 1024,
//!     data_bytes: 1 << 20,
//! };
//! let bytes = hdr.encode();
//! assert_eq!(decode_session_header(&bytes)?, hdr);
//! assert!(decode_session_header(&bytes[..10]).is_err());
//! # Ok::<(), transit_multifd::wire::WireError>(())
//! ```

use std::fmt;

mod error;

pub use error::{hex, SizeLimit, WireError};

/// The protocol version this crate speaks (5: a lost page channel rejoins
/// its session, [`InitPacket::rejoin`], [`PacketFlags::ACK`] and
/// [`PageReply`]).
pub const VERSION: u32 = 5;
/// Magic of the session header, first 4 bytes of the main channel (`TRSM`).
pub const MAIN_MAGIC: u32 = u32::from_be_bytes(*b"TRSM");
/// Magic of the init packet, first 4 bytes of a page channel (`TRSP`).
pub const PAGE_MAGIC: u32 = u32::from_be_bytes(*b"TRSP");
/// Magic of every page packet header (`TRPK`).
pub const PACKET_MAGIC: u32 = u32::from_be_bytes(*b"TRPK");

/// Length of an encoded [`SessionHeader`].
pub const SESSION_HEADER_LEN: usize = 64;
/// Length of an encoded [`InitPacket`].
pub const INIT_PACKET_LEN: usize = 32;
/// Length of the fixed part of a page packet ([`PacketHeader`]).
pub const PACKET_HEADER_LEN: usize = 32;
/// Length of a record header (kind, body length).
pub const RECORD_HEADER_LEN: usize = 8;
/// Length of one image-mode entry (a page offset).
pub const PAGE_ENTRY_LEN: usize = 8;
/// Length of one stream-mode entry (offset, length, reserved).
pub const STREAM_ENTRY_LEN: usize = 16;
/// Length of one hole range of a [`PacketFlags::HOLES`] packet (offset,
/// length).
pub const HOLE_ENTRY_LEN: usize = 16;
/// Length of an encoded [`PageReply`].
pub const PAGE_REPLY_LEN: usize = 16;
/// Magic of a [`PageReply`] (`TRAK`).
pub const REPLY_MAGIC: u32 = u32::from_be_bytes(*b"TRAK");
/// Length of encoded [`Totals`].
pub const TOTALS_LEN: usize = 48;

/// Most page channels in a session.
pub const MAX_CHANNELS: u32 = 256;
/// Smallest page size.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 64 * 1024;
/// Default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;
/// Smallest packet payload.
pub const MIN_PACKET_PAYLOAD: u32 = 512;
/// Largest packet payload.
pub const MAX_PACKET_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Default packet payload (as QEMU's `MULTIFD_PACKET_SIZE`).
pub const DEFAULT_PACKET_PAYLOAD: u32 = 512 * 1024;
/// Longest message in an error record.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// How the sender's data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A RAM-like image of `size` bytes split into pages; pages may be sent
    /// several times (passes) and in any order.
    Image {
        /// Image length in bytes (the last page may be partial).
        size: u64,
    },
    /// A byte stream of unknown length sent once, as chunks with offsets.
    Stream,
}

/// Payload compression of the session (byte 41 of the session header).
/// With `Zstd` a data packet may carry [`PacketFlags::COMPRESSED`]: its
/// payload is one zstd frame of the packet's data; packets that would not
/// shrink go raw. Unknown values are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Pages travel raw.
    #[default]
    None,
    /// Data packets may be zstd frames (version 4).
    Zstd,
}

/// The session header: first bytes of the main channel, sender to
/// receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHeader {
    /// Protocol version (the sender's).
    pub version: u32,
    /// Session identity; every page channel repeats it.
    pub uuid: [u8; 16],
    /// Page size: a power of two in `512..=65536`.
    pub page_size: u32,
    /// Number of page channels, `1..=256`.
    pub channels: u32,
    /// Image or stream.
    pub layout: Layout,
    /// Payload compression.
    pub compression: Compression,
    /// Both sides fold a per-page digest and compare it at the end.
    pub verify: bool,
    /// Largest payload of one packet (image mode: a multiple of the page
    /// size; stream mode: the chunk size).
    pub packet_payload: u32,
    /// Image mode: the most bytes of the image that will hold data at any
    /// time, whole pages: the image size less the holes the sender knows
    /// of (a sparse file's holes), which it sends as ranges. A receiver
    /// sizes its destination check by it and refuses a session that puts
    /// data in more pages. Stream mode: 0.
    pub data_bytes: u64,
}

const LAYOUT_IMAGE: u8 = 0;
const LAYOUT_STREAM: u8 = 1;
const SESSION_FLAG_VERIFY: u16 = 1;

impl SessionHeader {
    /// Encode to the 64-byte wire form.
    pub fn encode(&self) -> [u8; SESSION_HEADER_LEN] {
        let mut b = [0u8; SESSION_HEADER_LEN];
        put_u32(&mut b[0..], MAIN_MAGIC);
        put_u32(&mut b[4..], self.version);
        b[8..24].copy_from_slice(&self.uuid);
        put_u32(&mut b[24..], self.page_size);
        put_u32(&mut b[28..], self.channels);
        let (size, layout) = match self.layout {
            Layout::Image { size } => (size, LAYOUT_IMAGE),
            Layout::Stream => (0, LAYOUT_STREAM),
        };
        put_u64(&mut b[32..], size);
        b[40] = layout;
        b[41] = match self.compression {
            Compression::None => 0,
            Compression::Zstd => 1,
        };
        let flags = if self.verify { SESSION_FLAG_VERIFY } else { 0 };
        b[42..44].copy_from_slice(&flags.to_be_bytes());
        put_u32(&mut b[44..], self.packet_payload);
        put_u64(&mut b[48..], self.data_bytes);
        b
    }

    /// Check the parameters a decoder would check (page size, channel
    /// count, payload size). Used by senders on their own configuration.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.version != VERSION {
            return Err(WireError::Version {
                found: self.version,
                supported: VERSION,
            });
        }
        if !self.page_size.is_power_of_two()
            || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&self.page_size)
        {
            return Err(WireError::BadPageSize(self.page_size));
        }
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(WireError::BadChannelCount(self.channels));
        }
        let p = self.packet_payload;
        let ok = (MIN_PACKET_PAYLOAD..=MAX_PACKET_PAYLOAD).contains(&p)
            && match self.layout {
                Layout::Image { .. } => p >= self.page_size && p.is_multiple_of(self.page_size),
                Layout::Stream => true,
            };
        if !ok {
            return Err(WireError::BadPayloadSize {
                payload: p,
                page_size: self.page_size,
            });
        }
        let most = match self.layout {
            Layout::Image { size } => size.next_multiple_of(u64::from(self.page_size)),
            Layout::Stream => 0,
        };
        if self.data_bytes > most {
            return Err(WireError::BadDataBytes {
                data_bytes: self.data_bytes,
                most,
            });
        }
        Ok(())
    }

    /// Most entries (pages) in one packet: payload / page size in image
    /// mode, 1 in stream mode.
    pub fn pages_per_packet(&self) -> u32 {
        match self.layout {
            Layout::Image { .. } => self.packet_payload / self.page_size,
            Layout::Stream => 1,
        }
    }

    /// Bytes of one entry in this layout.
    pub fn entry_len(&self) -> usize {
        match self.layout {
            Layout::Image { .. } => PAGE_ENTRY_LEN,
            Layout::Stream => STREAM_ENTRY_LEN,
        }
    }

    /// Image size in bytes (0 in stream mode).
    pub fn image_size(&self) -> u64 {
        match self.layout {
            Layout::Image { size } => size,
            Layout::Stream => 0,
        }
    }

    /// Number of pages in the image (the last one may be partial).
    pub fn page_count(&self) -> u64 {
        self.image_size().div_ceil(u64::from(self.page_size))
    }

    /// Length of the page at `offset` (page size, or less for the last
    /// page). `offset` must be inside the image.
    pub fn page_len(&self, offset: u64) -> usize {
        let rest = self.image_size().saturating_sub(offset);
        rest.min(u64::from(self.page_size)) as usize
    }
}

/// Decode and validate a session header from the first
/// [`SESSION_HEADER_LEN`] bytes of `buf`.
pub fn decode_session_header(buf: &[u8]) -> Result<SessionHeader, WireError> {
    let b = need(buf, SESSION_HEADER_LEN, "session header")?;
    check_magic(b, MAIN_MAGIC, "session header")?;
    let version = get_u32(&b[4..]);
    if version != VERSION {
        return Err(WireError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&b[8..24]);
    let size = get_u64(&b[32..]);
    let layout = match b[40] {
        LAYOUT_IMAGE => Layout::Image { size },
        LAYOUT_STREAM => {
            if size != 0 {
                return Err(WireError::ReservedNotZero {
                    what: "session header image size in stream layout",
                });
            }
            Layout::Stream
        }
        other => return Err(WireError::UnknownLayout(other)),
    };
    let compression = match b[41] {
        0 => Compression::None,
        1 => Compression::Zstd,
        other => return Err(WireError::UnknownCompression(other)),
    };
    let flags = u16::from_be_bytes([b[42], b[43]]);
    if flags & !SESSION_FLAG_VERIFY != 0 {
        return Err(WireError::UnknownFlags {
            what: "session header",
            bits: u32::from(flags & !SESSION_FLAG_VERIFY),
        });
    }
    if b[56..64].iter().any(|&x| x != 0) {
        return Err(WireError::ReservedNotZero {
            what: "session header",
        });
    }
    let hdr = SessionHeader {
        version,
        uuid,
        page_size: get_u32(&b[24..]),
        channels: get_u32(&b[28..]),
        layout,
        compression,
        verify: flags & SESSION_FLAG_VERIFY != 0,
        packet_payload: get_u32(&b[44..]),
        data_bytes: get_u64(&b[48..]),
    };
    hdr.validate()?;
    Ok(hdr)
}

/// The init packet: first bytes of each page channel, sender to receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitPacket {
    /// Protocol version.
    pub version: u32,
    /// The session's uuid.
    pub uuid: [u8; 16],
    /// This channel's id, `0..channels`.
    pub channel_id: u32,
    /// A new connection for a page channel of a running session whose
    /// connection was lost (flag bit 0 of bytes 28..32): the receiver
    /// answers with [`PageReply::Resume`] (or [`PageReply::Refused`]) and
    /// the sender goes on from the first packet it did not apply.
    pub rejoin: bool,
}

const INIT_FLAG_REJOIN: u32 = 1;

impl InitPacket {
    /// Encode to the 32-byte wire form.
    pub fn encode(&self) -> [u8; INIT_PACKET_LEN] {
        let mut b = [0u8; INIT_PACKET_LEN];
        put_u32(&mut b[0..], PAGE_MAGIC);
        put_u32(&mut b[4..], self.version);
        b[8..24].copy_from_slice(&self.uuid);
        put_u32(&mut b[24..], self.channel_id);
        put_u32(&mut b[28..], if self.rejoin { INIT_FLAG_REJOIN } else { 0 });
        b
    }

    /// Check this packet against the session: same uuid, id in range.
    pub fn check(&self, session: &SessionHeader) -> Result<(), WireError> {
        if self.uuid != session.uuid {
            return Err(WireError::UuidMismatch {
                found: self.uuid,
                expected: session.uuid,
            });
        }
        if self.channel_id >= session.channels {
            return Err(WireError::ChannelIdOutOfRange {
                id: self.channel_id,
                channels: session.channels,
            });
        }
        Ok(())
    }
}

/// Decode an init packet from the first [`INIT_PACKET_LEN`] bytes of `buf`
/// (magic, version and reserved bytes are checked; the uuid and id are
/// checked against the session by [`InitPacket::check`]).
pub fn decode_init_packet(buf: &[u8]) -> Result<InitPacket, WireError> {
    let b = need(buf, INIT_PACKET_LEN, "init packet")?;
    check_magic(b, PAGE_MAGIC, "init packet")?;
    let version = get_u32(&b[4..]);
    if version != VERSION {
        return Err(WireError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let flags = get_u32(&b[28..]);
    if flags & !INIT_FLAG_REJOIN != 0 {
        return Err(WireError::UnknownFlags {
            what: "init packet",
            bits: flags & !INIT_FLAG_REJOIN,
        });
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&b[8..24]);
    Ok(InitPacket {
        version,
        uuid,
        channel_id: get_u32(&b[24..]),
        rejoin: flags & INIT_FLAG_REJOIN != 0,
    })
}

/// Flags of a page packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketFlags(u32);

impl PacketFlags {
    /// No flags: a data packet.
    pub const DATA: PacketFlags = PacketFlags(0);
    /// Barrier: every packet of this epoch on every channel is applied
    /// before anything after the barrier.
    pub const SYNC: PacketFlags = PacketFlags(1);
    /// The channel's last packet.
    pub const END: PacketFlags = PacketFlags(2);
    /// Image mode: `zero` ranges of zero pages (a file's holes), each an
    /// (offset, length) pair of [`HOLE_ENTRY_LEN`] bytes, no payload. A
    /// range of a million pages costs 16 bytes instead of 8 MB of offsets.
    pub const HOLES: PacketFlags = PacketFlags(4);
    /// A data packet whose payload is one zstd frame of its data (normal
    /// pages in entry order, or the stream chunk); `payload_len` is the
    /// frame's length, never more than the raw data's. Only in sessions
    /// with [`Compression::Zstd`] (version 4).
    pub const COMPRESSED: PacketFlags = PacketFlags(8);
    /// Image mode, delta transfer: `zero` ranges of pages the receiver
    /// keeps as it has them (its older copy matched the sender's, per the
    /// [`Record::Have`] hashes), in the HOLES entry format, no payload.
    /// Both sides fold each kept page's `page_hash` into the digest, so a
    /// page the receiver only believed equal fails the verification.
    pub const KEEP: PacketFlags = PacketFlags(16);
    /// Acknowledge: once the receiver has applied this packet (and every
    /// one before it on the channel) it writes a [`PageReply::Ack`] with
    /// its number back on the same channel. May be set on any packet; the
    /// sender keeps what it sent until acknowledged, to send it again
    /// over a new connection if this one is lost (version 5).
    pub const ACK: PacketFlags = PacketFlags(32);
    const KNOWN: u32 = 63;

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is set.
    pub fn contains(self, other: PacketFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// These flags with [`ACK`](Self::ACK) set (or cleared).
    pub fn with_ack(self, ack: bool) -> PacketFlags {
        if ack {
            PacketFlags(self.0 | Self::ACK.0)
        } else {
            PacketFlags(self.0 & !Self::ACK.0)
        }
    }
}

/// What a receiver writes back on a page channel (16 bytes: magic `TRAK`,
/// kind, a has-number byte, 2 zero bytes, a packet number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageReply {
    /// Every packet of this channel up to this number is applied (the
    /// answer to a packet with [`PacketFlags::ACK`]).
    Ack(u64),
    /// The answer to a rejoining channel's init packet: the number of the
    /// last packet applied on this channel (`None`: none yet). The
    /// sender sends again, in order, every packet after it.
    Resume(Option<u64>),
    /// The rejoin is refused (the session is over or failed, or this
    /// receiver takes no rejoins).
    Refused,
}

impl PageReply {
    /// Encode to the 16-byte wire form.
    pub fn encode(&self) -> [u8; PAGE_REPLY_LEN] {
        let mut b = [0u8; PAGE_REPLY_LEN];
        put_u32(&mut b[0..], REPLY_MAGIC);
        let (kind, num) = match *self {
            PageReply::Ack(n) => (1, Some(n)),
            PageReply::Resume(n) => (2, n),
            PageReply::Refused => (3, None),
        };
        b[4] = kind;
        b[5] = u8::from(num.is_some());
        put_u64(&mut b[8..], num.unwrap_or(0));
        b
    }
}

/// Decode a [`PageReply`] from the first [`PAGE_REPLY_LEN`] bytes of `buf`.
pub fn decode_page_reply(buf: &[u8]) -> Result<PageReply, WireError> {
    let b = need(buf, PAGE_REPLY_LEN, "page reply")?;
    check_magic(b, REPLY_MAGIC, "page reply")?;
    if b[6] != 0 || b[7] != 0 || b[5] > 1 {
        return Err(WireError::ReservedNotZero { what: "page reply" });
    }
    let num = (b[5] == 1).then(|| get_u64(&b[8..]));
    match (b[4], num) {
        (1, Some(n)) => Ok(PageReply::Ack(n)),
        (2, n) => Ok(PageReply::Resume(n)),
        (3, None) => Ok(PageReply::Refused),
        _ => Err(WireError::Unexpected("page reply of an unknown kind")),
    }
}

/// The fixed part of a page packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    /// DATA, SYNC or END.
    pub flags: PacketFlags,
    /// Global packet counter (strictly increasing on each channel).
    pub packet_num: u64,
    /// Entries with payload (normal pages, data chunks).
    pub normal: u32,
    /// Entries without payload (zero pages, zero chunks).
    pub zero: u32,
    /// Payload bytes after the entries.
    pub payload_len: u32,
    /// The sync epoch this packet belongs to (0 until the first sync).
    pub epoch: u32,
}

impl PacketHeader {
    /// Encode the fixed 32 bytes into `out[..32]`.
    pub fn encode_into(&self, out: &mut [u8]) {
        put_u32(&mut out[0..], PACKET_MAGIC);
        put_u32(&mut out[4..], self.flags.0);
        put_u64(&mut out[8..], self.packet_num);
        put_u32(&mut out[16..], self.normal);
        put_u32(&mut out[20..], self.zero);
        put_u32(&mut out[24..], self.payload_len);
        put_u32(&mut out[28..], self.epoch);
    }

    /// Bytes of entries following the fixed header.
    pub fn entries_len(&self, session: &SessionHeader) -> usize {
        if self.flags.contains(PacketFlags::HOLES) || self.flags.contains(PacketFlags::KEEP) {
            return self.zero as usize * HOLE_ENTRY_LEN;
        }
        (self.normal as usize + self.zero as usize) * session.entry_len()
    }
}

/// Decode and check the fixed part of a page packet against the session:
/// magic, known flags, SYNC/END packets empty, entry counts within the
/// packet capacity, payload within the packet payload size (and exactly
/// one entry per data packet in stream mode).
pub fn decode_packet_header(
    buf: &[u8],
    session: &SessionHeader,
) -> Result<PacketHeader, WireError> {
    let b = need(buf, PACKET_HEADER_LEN, "packet header")?;
    check_magic(b, PACKET_MAGIC, "packet header")?;
    let all = get_u32(&b[4..]);
    if all & !PacketFlags::KNOWN != 0 {
        return Err(WireError::UnknownFlags {
            what: "packet header",
            bits: all & !PacketFlags::KNOWN,
        });
    }
    // ACK goes with any packet; the checks below are of the rest.
    let flags = all & !PacketFlags::ACK.0;
    let h = PacketHeader {
        flags: PacketFlags(all),
        packet_num: get_u64(&b[8..]),
        normal: get_u32(&b[16..]),
        zero: get_u32(&b[20..]),
        payload_len: get_u32(&b[24..]),
        epoch: get_u32(&b[28..]),
    };
    if flags == PacketFlags::HOLES.0 || flags == PacketFlags::KEEP.0 {
        let capacity = session.pages_per_packet();
        if session.layout == Layout::Stream {
            return Err(WireError::WrongLayout);
        }
        if h.normal != 0 || h.zero == 0 || h.zero > capacity || h.payload_len != 0 {
            return Err(WireError::TooManyEntries {
                normal: h.normal,
                zero: h.zero,
                capacity,
            });
        }
        return Ok(h);
    }
    let compressed = flags == PacketFlags::COMPRESSED.0;
    if compressed {
        if session.compression == Compression::None {
            return Err(WireError::CompressedWithoutCompression);
        }
        if h.normal == 0 || h.payload_len == 0 {
            return Err(WireError::PayloadMismatch {
                declared: h.payload_len,
                expected: 0,
            });
        }
    }
    if flags != 0 && !compressed {
        let control = flags == PacketFlags::SYNC.0 || flags == PacketFlags::END.0;
        if !control || h.normal != 0 || h.zero != 0 || h.payload_len != 0 {
            return Err(WireError::BadControlPacket { flags });
        }
        return Ok(h);
    }
    let entries = u64::from(h.normal) + u64::from(h.zero);
    let capacity = session.pages_per_packet();
    if entries == 0 || entries > u64::from(capacity) {
        return Err(WireError::TooManyEntries {
            normal: h.normal,
            zero: h.zero,
            capacity,
        });
    }
    let max_payload = u64::from(h.normal) * u64::from(session.page_size);
    let max_payload = match session.layout {
        Layout::Image { .. } => max_payload,
        Layout::Stream => u64::from(session.packet_payload),
    };
    if u64::from(h.payload_len) > max_payload {
        return Err(WireError::PayloadMismatch {
            declared: h.payload_len,
            expected: max_payload,
        });
    }
    Ok(h)
}

/// Decode the image-mode entries of `hdr` from `buf` into `out` (cleared
/// first): normal page offsets first, then zero page offsets. Every
/// offset must be page aligned and inside the image, and the payload
/// length must equal the bytes of the normal pages.
pub fn decode_page_offsets(
    buf: &[u8],
    hdr: &PacketHeader,
    session: &SessionHeader,
    out: &mut Vec<u64>,
) -> Result<(), WireError> {
    out.clear();
    let size = match session.layout {
        Layout::Image { size } => size,
        Layout::Stream => return Err(WireError::WrongLayout),
    };
    let n = hdr.normal as usize + hdr.zero as usize;
    let b = need(buf, n * PAGE_ENTRY_LEN, "page offsets")?;
    let mask = u64::from(session.page_size) - 1;
    let mut payload = 0u64;
    for (i, e) in b.chunks_exact(PAGE_ENTRY_LEN).enumerate() {
        let off = get_u64(e);
        if off >= size {
            return Err(WireError::OffsetOutOfRange { offset: off, size });
        }
        if off & mask != 0 {
            return Err(WireError::OffsetMisaligned {
                offset: off,
                page_size: session.page_size,
            });
        }
        if i < hdr.normal as usize {
            payload += session.page_len(off) as u64;
        }
        out.push(off);
    }
    // A compressed packet's frame is never longer than the raw data.
    let fits = if hdr.flags.contains(PacketFlags::COMPRESSED) {
        u64::from(hdr.payload_len) <= payload
    } else {
        u64::from(hdr.payload_len) == payload
    };
    if !fits {
        return Err(WireError::PayloadMismatch {
            declared: hdr.payload_len,
            expected: payload,
        });
    }
    Ok(())
}

/// Decode the ranges of a [`PacketFlags::HOLES`] packet into `out`
/// (cleared first) as (offset, length) pairs. Each range starts on a page
/// boundary, is not empty, ends on a page boundary or at the image's end,
/// lies inside the image, and starts after the previous one ends.
pub fn decode_hole_ranges(
    buf: &[u8],
    hdr: &PacketHeader,
    session: &SessionHeader,
    out: &mut Vec<(u64, u64)>,
) -> Result<(), WireError> {
    out.clear();
    let size = match session.layout {
        Layout::Image { size } => size,
        Layout::Stream => return Err(WireError::WrongLayout),
    };
    let n = hdr.zero as usize;
    let b = need(buf, n * HOLE_ENTRY_LEN, "hole ranges")?;
    let mask = u64::from(session.page_size) - 1;
    let mut next = 0u64;
    for e in b.chunks_exact(HOLE_ENTRY_LEN) {
        let (off, len) = (get_u64(e), get_u64(&e[8..]));
        let end = off.saturating_add(len);
        if off & mask != 0 {
            return Err(WireError::OffsetMisaligned {
                offset: off,
                page_size: session.page_size,
            });
        }
        if len == 0 || end > size || (end & mask != 0 && end != size) {
            return Err(WireError::BadHoleRange {
                offset: off,
                len,
                size,
            });
        }
        if off < next {
            return Err(WireError::HoleOrder {
                offset: off,
                previous_end: next,
            });
        }
        next = end;
        out.push((off, len));
    }
    Ok(())
}

/// One stream chunk: `len` bytes at byte `offset` of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEntry {
    /// Byte offset in the stream.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// True for a chunk of zeros sent without payload.
    pub zero: bool,
}

impl StreamEntry {
    /// Encode into `out[..16]`.
    pub fn encode_into(&self, out: &mut [u8]) {
        put_u64(&mut out[0..], self.offset);
        put_u32(&mut out[8..], self.len);
        put_u32(&mut out[12..], 0);
    }
}

/// Decode the single stream-mode entry of `hdr` from `buf`. A data chunk's
/// length equals the payload length; a zero chunk has no payload; no chunk
/// is empty, longer than the packet payload size, or past `u64::MAX`.
pub fn decode_stream_entry(
    buf: &[u8],
    hdr: &PacketHeader,
    session: &SessionHeader,
) -> Result<StreamEntry, WireError> {
    if session.layout != Layout::Stream {
        return Err(WireError::WrongLayout);
    }
    let b = need(buf, STREAM_ENTRY_LEN, "stream entry")?;
    let e = StreamEntry {
        offset: get_u64(b),
        len: get_u32(&b[8..]),
        zero: hdr.zero == 1,
    };
    if get_u32(&b[12..]) != 0 {
        return Err(WireError::ReservedNotZero {
            what: "stream entry",
        });
    }
    let expected = if e.zero { 0 } else { u64::from(e.len) };
    let fits = if hdr.flags.contains(PacketFlags::COMPRESSED) {
        !e.zero && u64::from(hdr.payload_len) <= expected
    } else {
        u64::from(hdr.payload_len) == expected
    };
    if e.len == 0 || e.len > session.packet_payload || !fits {
        return Err(WireError::PayloadMismatch {
            declared: hdr.payload_len,
            expected,
        });
    }
    if e.offset.checked_add(u64::from(e.len)).is_none() {
        return Err(WireError::OffsetOutOfRange {
            offset: e.offset,
            size: u64::MAX,
        });
    }
    Ok(e)
}

/// What one side moved in a session; the end record carries the sender's,
/// the verdict the receiver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Normal pages (stream: data chunks).
    pub pages: u64,
    /// Zero pages (stream: zero chunks).
    pub zero_pages: u64,
    /// Payload bytes of normal pages or chunks.
    pub bytes: u64,
    /// Page packets, SYNC and END packets included.
    pub packets: u64,
    /// Stream mode: total stream length; image mode: the image size.
    pub stream_len: u64,
    /// Order-independent digest of every page sent (0 without
    /// verification).
    pub digest: u64,
}

impl Totals {
    fn encode_into(&self, out: &mut [u8]) {
        put_u64(&mut out[0..], self.pages);
        put_u64(&mut out[8..], self.zero_pages);
        put_u64(&mut out[16..], self.bytes);
        put_u64(&mut out[24..], self.packets);
        put_u64(&mut out[32..], self.stream_len);
        put_u64(&mut out[40..], self.digest);
    }

    fn decode(b: &[u8]) -> Totals {
        Totals {
            pages: get_u64(&b[0..]),
            zero_pages: get_u64(&b[8..]),
            bytes: get_u64(&b[16..]),
            packets: get_u64(&b[24..]),
            stream_len: get_u64(&b[32..]),
            digest: get_u64(&b[40..]),
        }
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} pages + {} zero pages, {} bytes, {} packets, length {}, digest {:016x}",
            self.pages, self.zero_pages, self.bytes, self.packets, self.stream_len, self.digest
        )
    }
}

/// The class of an error record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The peer broke the protocol.
    Protocol,
    /// An I/O error on some channel or on the data source/sink.
    Io,
    /// Totals or digest differ.
    Mismatch,
    /// Aborted by a user or signal.
    Aborted,
    /// The session was refused (parameters, destination).
    Refused,
    /// A code this version does not know.
    Other(u32),
}

impl ErrorCode {
    fn to_u32(self) -> u32 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::Io => 2,
            ErrorCode::Mismatch => 3,
            ErrorCode::Aborted => 4,
            ErrorCode::Refused => 5,
            ErrorCode::Other(n) => n,
        }
    }

    fn from_u32(n: u32) -> ErrorCode {
        match n {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::Io,
            3 => ErrorCode::Mismatch,
            4 => ErrorCode::Aborted,
            5 => ErrorCode::Refused,
            n => ErrorCode::Other(n),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Protocol => f.write_str("protocol error"),
            ErrorCode::Io => f.write_str("I/O error"),
            ErrorCode::Mismatch => f.write_str("verification mismatch"),
            ErrorCode::Aborted => f.write_str("aborted"),
            ErrorCode::Refused => f.write_str("refused"),
            ErrorCode::Other(n) => write!(f, "error code {n}"),
        }
    }
}

/// Result of the receiver's verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictStatus {
    /// Totals and digest match.
    Ok,
    /// They differ.
    Mismatch,
}

/// A record on the main channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Sender -> receiver: barrier closing `epoch`.
    Sync {
        /// The epoch the barrier closes (0 for the first).
        epoch: u32,
    },
    /// Sender -> receiver: no more data; the sender's totals.
    End(Totals),
    /// Either direction: the session failed; why.
    Error {
        /// Error class.
        code: ErrorCode,
        /// Human-readable reason (at most [`MAX_ERROR_MESSAGE`] bytes).
        message: String,
    },
    /// Receiver -> sender: every channel is present, the destination is
    /// ready.
    Accept {
        /// The channel count the receiver accepted.
        channels: u32,
        /// A [`Record::Have`] follows (the receiver has an older copy of
        /// the image: delta transfer).
        have: bool,
    },
    /// Receiver -> sender, right after an accept with `have`: hashes of
    /// the image as the receiver already holds it, one per chunk of
    /// `chunk_size` bytes from offset 0 ([`crate::digest::page_hash`] of
    /// the chunk at its offset). The sender sends chunks whose hash
    /// differs, and KEEP ranges for the others.
    Have {
        /// Bytes per chunk: a multiple of the page size.
        chunk_size: u32,
        /// One hash per chunk, the last chunk possibly short; chunks past
        /// the end of the receiver's copy are absent.
        hashes: Vec<u64>,
    },
    /// Receiver -> sender: answer to the end record, with the receiver's
    /// totals.
    Verdict {
        /// Ok or mismatch.
        status: VerdictStatus,
        /// What the receiver counted.
        totals: Totals,
    },
}

const REC_SYNC: u32 = 1;
const REC_END: u32 = 2;
const REC_ERROR: u32 = 3;
const REC_ACCEPT: u32 = 4;
const REC_VERDICT: u32 = 5;
const REC_HAVE: u32 = 6;

/// Most chunk hashes in a [`Record::Have`] (8 MiB of hashes).
pub const MAX_HAVE_CHUNKS: u32 = 1 << 20;

/// Accept record flag: a Have record follows.
const ACCEPT_HAVE: u32 = 1;

/// A decoded record header: the kind is known and the body length fits
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record kind.
    pub kind: u32,
    /// Body length in bytes.
    pub len: u32,
}

impl Record {
    /// Append the encoded record (header and body) to `out`. An error
    /// message longer than [`MAX_ERROR_MESSAGE`] bytes is cut at a
    /// character boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
        let kind = match self {
            Record::Sync { epoch } => {
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&[0u8; 4]);
                REC_SYNC
            }
            Record::End(t) => {
                let at = out.len();
                out.resize(at + TOTALS_LEN, 0);
                t.encode_into(&mut out[at..]);
                REC_END
            }
            Record::Error { code, message } => {
                let mut cut = message.len().min(MAX_ERROR_MESSAGE);
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.extend_from_slice(&code.to_u32().to_be_bytes());
                out.extend_from_slice(&(cut as u32).to_be_bytes());
                out.extend_from_slice(&message.as_bytes()[..cut]);
                REC_ERROR
            }
            Record::Accept { channels, have } => {
                out.extend_from_slice(&channels.to_be_bytes());
                let flags = if *have { ACCEPT_HAVE } else { 0 };
                out.extend_from_slice(&flags.to_be_bytes());
                REC_ACCEPT
            }
            Record::Have { chunk_size, hashes } => {
                out.extend_from_slice(&chunk_size.to_be_bytes());
                out.extend_from_slice(&(hashes.len() as u32).to_be_bytes());
                for h in hashes {
                    out.extend_from_slice(&h.to_be_bytes());
                }
                REC_HAVE
            }
            Record::Verdict { status, totals } => {
                let s: u32 = match status {
                    VerdictStatus::Ok => 0,
                    VerdictStatus::Mismatch => 1,
                };
                out.extend_from_slice(&s.to_be_bytes());
                out.extend_from_slice(&[0u8; 4]);
                let at = out.len();
                out.resize(at + TOTALS_LEN, 0);
                totals.encode_into(&mut out[at..]);
                REC_VERDICT
            }
        };
        let body = (out.len() - start - RECORD_HEADER_LEN) as u32;
        put_u32(&mut out[start..], kind);
        put_u32(&mut out[start + 4..], body);
    }

    /// Encode into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v);
        v
    }
}

/// Decode a record header: the kind must be known and the length must be
/// the fixed body length of that kind (or, for error records, within the
/// message limit).
pub fn decode_record_header(buf: &[u8]) -> Result<RecordHeader, WireError> {
    let b = need(buf, RECORD_HEADER_LEN, "record header")?;
    let kind = get_u32(b);
    let len = get_u32(&b[4..]);
    let ok = match kind {
        REC_SYNC | REC_ACCEPT => len == 8,
        REC_END => len as usize == TOTALS_LEN,
        REC_VERDICT => len as usize == 8 + TOTALS_LEN,
        REC_ERROR => (8..=8 + MAX_ERROR_MESSAGE).contains(&(len as usize)),
        REC_HAVE => len >= 8 && (len - 8).is_multiple_of(8) && (len - 8) / 8 <= MAX_HAVE_CHUNKS,
        _ => {
            return Err(WireError::UnknownRecord {
                kind,
                bytes: b[..4].try_into().unwrap_or([0; 4]),
            })
        }
    };
    if !ok {
        return Err(WireError::BadRecordLength { kind, len });
    }
    Ok(RecordHeader { kind, len })
}

/// Decode a record body of the kind named by `hdr`.
pub fn decode_record_body(hdr: &RecordHeader, buf: &[u8]) -> Result<Record, WireError> {
    let b = need(buf, hdr.len as usize, "record body")?;
    let reserved = |r: &[u8], what| {
        if r.iter().any(|&x| x != 0) {
            Err(WireError::ReservedNotZero { what })
        } else {
            Ok(())
        }
    };
    match hdr.kind {
        REC_SYNC => {
            reserved(&b[4..8], "sync record")?;
            Ok(Record::Sync { epoch: get_u32(b) })
        }
        REC_ACCEPT => {
            let flags = get_u32(&b[4..]);
            if flags & !ACCEPT_HAVE != 0 {
                return Err(WireError::UnknownFlags {
                    what: "accept record",
                    bits: flags & !ACCEPT_HAVE,
                });
            }
            Ok(Record::Accept {
                channels: get_u32(b),
                have: flags & ACCEPT_HAVE != 0,
            })
        }
        REC_HAVE => {
            let chunk_size = get_u32(b);
            let count = get_u32(&b[4..]) as usize;
            if count != (hdr.len as usize - 8) / 8 || chunk_size == 0 {
                return Err(WireError::BadRecordLength {
                    kind: hdr.kind,
                    len: hdr.len,
                });
            }
            let hashes = b[8..8 + 8 * count].chunks_exact(8).map(get_u64).collect();
            Ok(Record::Have { chunk_size, hashes })
        }
        REC_END => Ok(Record::End(Totals::decode(b))),
        REC_VERDICT => {
            reserved(&b[4..8], "verdict record")?;
            let status = match get_u32(b) {
                0 => VerdictStatus::Ok,
                1 => VerdictStatus::Mismatch,
                n => {
                    return Err(WireError::UnknownFlags {
                        what: "verdict status",
                        bits: n,
                    })
                }
            };
            Ok(Record::Verdict {
                status,
                totals: Totals::decode(&b[8..]),
            })
        }
        REC_ERROR => {
            let code = ErrorCode::from_u32(get_u32(b));
            let mlen = get_u32(&b[4..]) as usize;
            if mlen != hdr.len as usize - 8 {
                return Err(WireError::BadRecordLength {
                    kind: hdr.kind,
                    len: hdr.len,
                });
            }
            let message = String::from_utf8_lossy(&b[8..8 + mlen]).into_owned();
            Ok(Record::Error { code, message })
        }
        kind => Err(WireError::UnknownRecord {
            kind,
            bytes: kind.to_be_bytes(),
        }),
    }
}

/// Decode one whole record from the start of `buf`; returns it and the
/// bytes it used.
pub fn decode_record(buf: &[u8]) -> Result<(Record, usize), WireError> {
    let hdr = decode_record_header(buf)?;
    let body = &buf[RECORD_HEADER_LEN..];
    let rec = decode_record_body(&hdr, body)?;
    Ok((rec, RECORD_HEADER_LEN + hdr.len as usize))
}

fn need<'a>(buf: &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
    buf.get(..n).ok_or(WireError::Truncated {
        what,
        need: n,
        have: buf.len(),
    })
}

fn check_magic(b: &[u8], expected: u32, what: &'static str) -> Result<(), WireError> {
    let found = get_u32(b);
    if found != expected {
        return Err(WireError::BadMagic {
            what,
            found,
            expected,
        });
    }
    Ok(())
}

/// Which structure a connection starts with, from its first 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// A main channel (session header).
    Main,
    /// A page channel (init packet).
    Page,
}

/// Classify a connection by its first four bytes.
pub fn classify(first: &[u8]) -> Result<ConnectionKind, WireError> {
    let b = need(first, 4, "connection magic")?;
    match get_u32(b) {
        MAIN_MAGIC => Ok(ConnectionKind::Main),
        PAGE_MAGIC => Ok(ConnectionKind::Page),
        found => Err(WireError::UnknownConnection { found }),
    }
}

/// What the first bytes of a connection say to a receiver that expects
/// plain bytes (`--raw`): see [`framed_start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramedStart {
    /// Not decided yet: give at least this many bytes (or all there are,
    /// at end of file).
    NeedMore(usize),
    /// The peer speaks the framed protocol: a session header, an init
    /// packet, or an error record (a framed sender that gave up, with its
    /// reason).
    Framed {
        /// The peer's reason, when it sent an error record.
        reason: Option<String>,
    },
    /// Plain bytes.
    Raw,
}

/// Tell a framed transit peer from plain bytes by the first bytes of a
/// connection. A plain stream that starts with a complete, valid error
/// record is taken for a framed peer (the record needs 16 exact bytes
/// before its message).
pub fn framed_start(first: &[u8]) -> FramedStart {
    if first.len() < 4 {
        return FramedStart::NeedMore(4);
    }
    if classify(first).is_ok() {
        return FramedStart::Framed { reason: None };
    }
    if get_u32(first) != REC_ERROR {
        return FramedStart::Raw;
    }
    if first.len() < RECORD_HEADER_LEN {
        return FramedStart::NeedMore(RECORD_HEADER_LEN);
    }
    let Ok(h) = decode_record_header(first) else {
        return FramedStart::Raw;
    };
    let total = RECORD_HEADER_LEN + h.len as usize;
    if first.len() < total {
        return FramedStart::NeedMore(total);
    }
    match decode_record_body(&h, &first[RECORD_HEADER_LEN..total]) {
        Ok(Record::Error { message, .. }) => FramedStart::Framed {
            reason: Some(message),
        },
        _ => FramedStart::Raw,
    }
}

// Callers pass slices at least as long as the integer; `need` checked the
// structure length first.
fn get_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn get_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn put_u32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_be_bytes());
}

fn put_u64(b: &mut [u8], v: u64) {
    b[..8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod framed_start_tests {
    use super::*;

    #[test]
    fn framed_peers_are_told_from_plain_bytes() {
        assert_eq!(framed_start(b"TR"), FramedStart::NeedMore(4));
        assert_eq!(framed_start(b"TRSM"), FramedStart::Framed { reason: None });
        assert_eq!(
            framed_start(b"TRSPxxxx"),
            FramedStart::Framed { reason: None }
        );
        assert_eq!(framed_start(b"hello world"), FramedStart::Raw);
        let rec = Record::Error {
            code: ErrorCode::Aborted,
            message: "gave up".into(),
        }
        .to_bytes();
        for cut in [4, 7, rec.len() - 1] {
            assert!(
                matches!(framed_start(&rec[..cut]), FramedStart::NeedMore(n) if n > cut),
                "{cut}"
            );
        }
        assert_eq!(
            framed_start(&rec),
            FramedStart::Framed {
                reason: Some("gave up".into())
            }
        );
        // The same kind number followed by anything else is plain data.
        assert_eq!(framed_start(&[0, 0, 0, 3, 0xff, 0, 0, 0]), FramedStart::Raw);
    }
}
