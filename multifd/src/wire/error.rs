//! [`WireError`]: everything a decoder or a session check refuses, with
//! messages that show the offending bytes.

/// Everything a decoder or a session check can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the structure needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The magic number is wrong.
    #[error("bad magic in {what}: found {}, expected {}", show_magic(*found), show_magic(*expected))]
    BadMagic {
        /// The structure.
        what: &'static str,
        /// The magic found.
        found: u32,
        /// The magic expected.
        expected: u32,
    },
    /// The connection starts with neither the main nor the page magic.
    #[error("not a multifd connection: it starts with {}", show_magic(*found))]
    UnknownConnection {
        /// The first four bytes.
        found: u32,
    },
    /// A different protocol version.
    #[error("peer speaks protocol version {found}, this side speaks version {supported}")]
    Version {
        /// The peer's version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// A page channel of another session.
    #[error("session uuid {} does not match {}", hex(found), hex(expected))]
    UuidMismatch {
        /// The uuid received.
        found: [u8; 16],
        /// The uuid of this session.
        expected: [u8; 16],
    },
    /// A channel id not below the channel count.
    #[error("channel id {id} out of range: the session has {channels} page channels (ids 0..{channels})")]
    ChannelIdOutOfRange {
        /// The id received.
        id: u32,
        /// Channels in the session.
        channels: u32,
    },
    /// Two page channels with one id.
    #[error("duplicate page channel id {id}")]
    DuplicateChannel {
        /// The id.
        id: u32,
    },
    /// A second main channel.
    #[error("duplicate main channel")]
    DuplicateMain,
    /// More connections than the session has channels.
    #[error("extra connection: the session already has its main channel and all {channels} page channels")]
    ExtraConnection {
        /// Page channels in the session.
        channels: u32,
    },
    /// The sender's channel count differs from the one the receiver
    /// expects.
    #[error(
        "channel count mismatch: sender has {found} page channels, receiver expects {expected}"
    )]
    ChannelCountMismatch {
        /// The sender's count.
        found: u32,
        /// The receiver's.
        expected: u32,
    },
    /// The session header's data size is larger than the image (or not
    /// zero for a stream).
    #[error("data size {data_bytes} in the session header is more than the image's {most} bytes (0 for a stream)")]
    BadDataBytes {
        /// The header's data size.
        data_bytes: u64,
        /// The most it may be.
        most: u64,
    },
    /// The sender put data in more pages than its header announced.
    #[error("the sender put data in more than the {announced} bytes its session header announced")]
    DataOverAnnounced {
        /// The header's data size.
        announced: u64,
    },
    /// The sender's image is larger than the receiver can or will take.
    #[error(
        "the image's data, up to {} ({size} bytes), is more than {limit} ({} at most): the receiver refuses it",
        show_size(*size),
        show_size(limit.bytes())
    )]
    ImageTooLarge {
        /// The most bytes of data the sender's image holds (its size less
        /// the holes it knows of).
        size: u64,
        /// The receiver's limit and where it comes from.
        limit: SizeLimit,
    },
    /// Page size not a power of two in range.
    #[error("invalid page size {0}: must be a power of two in 512..=65536")]
    BadPageSize(u32),
    /// Channel count out of range.
    #[error("invalid channel count {0}: must be 1..=256")]
    BadChannelCount(u32),
    /// Packet payload size out of range.
    #[error("invalid packet payload size {payload} (page size {page_size}): must be in 512..=16 MiB and, for images, a multiple of the page size")]
    BadPayloadSize {
        /// Payload size.
        payload: u32,
        /// Page size.
        page_size: u32,
    },
    /// Compression method unknown.
    #[error("unsupported compression method {0} (this version knows 0 = none, 1 = zstd)")]
    UnknownCompression(u8),
    /// A compressed packet in a session that announced no compression.
    #[error("a compressed packet in a session without compression")]
    CompressedWithoutCompression,
    /// A compressed payload that does not decompress to the packet's data.
    #[error("a compressed payload does not decompress to the {expected} bytes of its data: {why}")]
    BadCompressedPayload {
        /// The raw data's length.
        expected: usize,
        /// What the decompressor said.
        why: String,
    },
    /// Layout byte unknown.
    #[error("unknown layout {0} (0 = image, 1 = stream)")]
    UnknownLayout(u8),
    /// Flag bits this version does not know.
    #[error("unknown flag bits {bits:#x} in {what}")]
    UnknownFlags {
        /// The structure.
        what: &'static str,
        /// The unknown bits.
        bits: u32,
    },
    /// Reserved bytes not zero.
    #[error("reserved bytes not zero in {what}")]
    ReservedNotZero {
        /// The structure.
        what: &'static str,
    },
    /// SYNC/END with entries, or both flags.
    #[error("control packet (flags {flags:#x}) carries entries or payload, or mixes SYNC and END")]
    BadControlPacket {
        /// The flags.
        flags: u32,
    },
    /// Entry counts zero or past the packet capacity.
    #[error("packet has {normal} normal + {zero} zero entries; capacity is 1..={capacity}")]
    TooManyEntries {
        /// Normal entries.
        normal: u32,
        /// Zero entries.
        zero: u32,
        /// Capacity.
        capacity: u32,
    },
    /// Offset past the image end.
    #[error("offset {offset} is outside the image of {size} bytes")]
    OffsetOutOfRange {
        /// The offset.
        offset: u64,
        /// Image size.
        size: u64,
    },
    /// Offset not on a page boundary.
    #[error("offset {offset} is not aligned to the page size {page_size}")]
    OffsetMisaligned {
        /// The offset.
        offset: u64,
        /// Page size.
        page_size: u32,
    },
    /// Payload length does not match the entries.
    #[error("payload length {declared} does not match the entries ({expected} bytes)")]
    PayloadMismatch {
        /// Declared payload length.
        declared: u32,
        /// What the entries imply (or the maximum).
        expected: u64,
    },
    /// An image decoder used on a stream session or the reverse.
    #[error("entry kind does not match the session layout")]
    WrongLayout,
    /// A page sent twice between two barriers.
    #[error("page at offset {offset} sent twice in epoch {epoch}")]
    DuplicatePage {
        /// The offset.
        offset: u64,
        /// The epoch.
        epoch: u32,
    },
    /// A packet of another epoch.
    #[error("packet of epoch {found} while epoch {expected} is open")]
    Epoch {
        /// The packet's epoch.
        found: u32,
        /// The open epoch.
        expected: u32,
    },
    /// Packet numbers not increasing on a channel.
    #[error("packet number {found} after {previous}: packet numbers must increase")]
    PacketOrder {
        /// The packet's number.
        found: u64,
        /// The previous one.
        previous: u64,
    },
    /// Stream chunks overlap or leave a gap.
    #[error("stream chunk at offset {offset} does not continue the stream at {expected}")]
    StreamOrder {
        /// The chunk's offset.
        offset: u64,
        /// The next byte the stream needs.
        expected: u64,
    },
    /// A record kind this version does not know.
    #[error("unknown record kind {kind} (bytes {})", show_bytes(bytes))]
    UnknownRecord {
        /// The kind.
        kind: u32,
        /// Its raw bytes.
        bytes: [u8; 4],
    },
    /// A record body of the wrong length.
    #[error("record kind {kind} has invalid length {len}")]
    BadRecordLength {
        /// The kind.
        kind: u32,
        /// The length.
        len: u32,
    },
    /// A SYNC barrier that can never complete: a channel ended its part
    /// of the session (an END packet on a page channel, the End record on
    /// the main channel) while another channel waits at the barrier of
    /// `epoch`, or another channel reached that barrier after it ended.
    #[error(
        "{ended} while the SYNC barrier of epoch {epoch} needs every channel: \
         a channel that ended can never reach a later barrier"
    )]
    BarrierAfterEnd {
        /// What ended the channel: `END packet` or `End record`.
        ended: &'static str,
        /// The epoch the barrier closes.
        epoch: u32,
    },
    /// A record or packet that makes no sense at this point.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    /// A hole range that is empty, leaves the image or ends inside a page.
    #[error("hole range of {len} bytes at offset {offset} is empty, ends inside a page or leaves the image of {size} bytes")]
    BadHoleRange {
        /// The range's offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// Image size.
        size: u64,
    },
    /// Hole ranges of one packet out of order or overlapping.
    #[error("hole range at offset {offset} starts before the previous one ends ({previous_end})")]
    HoleOrder {
        /// The range's offset.
        offset: u64,
        /// Where the previous range ended.
        previous_end: u64,
    },
    /// The session ended with pages of the image that were neither sent
    /// nor declared zero.
    #[error("the sender ended the session after covering {covered} of the image's {pages} pages: the other {} were neither sent nor declared zero", pages - covered)]
    Incomplete {
        /// Pages sent or declared zero at least once.
        covered: u64,
        /// Pages in the image.
        pages: u64,
    },
    /// The peer answered with a TLS record (an alert, a handshake): it
    /// expects TLS and this side speaks plain multifd.
    #[error(
        "the peer answered with a TLS {} record: it expects TLS and this side does not use it \
         (TLS on one side only? give --tls-creds to both ends or neither)",
        if *content_type == 0x15 { "alert" } else { "handshake" }
    )]
    TlsRecord {
        /// The TLS content type (0x15 alert, 0x16 handshake).
        content_type: u8,
    },
}

impl WireError {
    /// [`WireError::TlsRecord`] if `bytes` (the start of what the peer
    /// sent) is a TLS alert or handshake record: no multifd record or
    /// packet starts that way.
    pub fn tls_record(bytes: &[u8]) -> Option<WireError> {
        match bytes {
            [t @ (0x15 | 0x16), 0x03, ..] => Some(WireError::TlsRecord { content_type: *t }),
            _ => None,
        }
    }
}

/// A receiver's bound on the image size, by where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    /// Set by the receiver's user (`recv --max-size`).
    Configured(u64),
    /// The memory available on the receiver (an image received into
    /// memory).
    MemoryAvailable(u64),
    /// The free space of the output's file system, plus what the existing
    /// output file occupies (it is replaced).
    FreeSpace(u64),
}

impl SizeLimit {
    /// The bound in bytes.
    pub fn bytes(&self) -> u64 {
        match *self {
            SizeLimit::Configured(b) | SizeLimit::MemoryAvailable(b) | SizeLimit::FreeSpace(b) => b,
        }
    }
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SizeLimit::Configured(_) => "the receiver's size limit (--max-size)",
            SizeLimit::MemoryAvailable(_) => {
                "the memory available on the receiver (give --output FILE, or --max-size to override)"
            }
            SizeLimit::FreeSpace(_) => {
                "the free space at the receiver's output (--max-size overrides, for sparse images)"
            }
        })
    }
}

/// `1.00 GiB`, `512.0 MiB`, `17 B`.
fn show_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{b} B"),
        _ if v >= 100.0 => format!("{v:.0} {}", UNITS[u]),
        _ => format!("{v:.2} {}", UNITS[u]),
    }
}

fn show_magic(m: u32) -> String {
    show_bytes(&m.to_be_bytes())
}

fn show_bytes(b: &[u8; 4]) -> String {
    let text: String = b
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect();
    let mut s = format!("{:#010x} \"{text}\"", u32::from_be_bytes(*b));
    if matches!(b, b"GET " | b"POST" | b"HEAD" | b"PUT " | b"HTTP") {
        s.push_str(" (an HTTP request?)");
    } else if b[0] == 0x16 && b[1] == 0x03 {
        s.push_str(
            " (a TLS handshake: the peer uses TLS and this side does not; \
             give --tls-creds to both ends or neither)",
        );
    }
    s
}

/// Lower-case hex of a uuid, with dashes.
pub fn hex(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}
