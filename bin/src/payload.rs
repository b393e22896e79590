//! What `send` sends: a RAM-like image (generated, or a regular file
//! mapped read-only) or a byte stream (stdin, a pipe, a device, an empty
//! file), and the plain byte copies used by `--raw` and `file:`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use transit_channel::{io as chio, Channel};
use transit_multifd::{Content, ImageSpec, SourceImage};

use crate::idle::IdleWatch;

/// Buffer size of plain copies (loopback TCP wants ~1 MiB writes).
pub const COPY_BUF: usize = 1 << 20;

/// The payload of a send.
pub enum Input {
    /// An image.
    Image {
        /// The pages.
        image: SourceImage,
        /// The file it maps, if any.
        file: Option<PathBuf>,
    },
    /// A stream of unknown length.
    Stream {
        /// Where the bytes come from.
        reader: Box<dyn Read + Send>,
        /// `stdin` or the path.
        name: String,
    },
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Image { image, file } => write!(f, "Image({} bytes, {file:?})", image.len()),
            Input::Stream { name, .. } => write!(f, "Stream({name})"),
        }
    }
}

/// Generate an image.
pub fn generate(
    size: u64,
    page_size: u32,
    zero_ratio: f64,
    seed: u64,
    compressible: bool,
) -> Result<Input, String> {
    let spec = ImageSpec {
        size,
        page_size,
        zero_ratio,
        seed,
        content: if compressible {
            Content::Compressible
        } else {
            Content::Random
        },
    };
    let image =
        SourceImage::generate(&spec).map_err(|e| format!("generate a {size}-byte image: {e}"))?;
    Ok(Input::Image { image, file: None })
}

/// Open `--input`: `-` is stdin (a stream); a non-empty regular file is
/// mapped as an image when `map` is true; anything else is a stream.
pub fn open(path: &Path, map: bool) -> Result<Input, String> {
    if path.as_os_str() == "-" {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stdin: {e}"))?;
        return Ok(Input::Stream {
            reader: Box::new(File::from(fd)),
            name: "stdin".into(),
        });
    }
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("input {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("input {shown}: {e}"))?;
    if map && meta.is_file() && meta.len() > 0 {
        let image = SourceImage::map_file(path).map_err(|e| format!("map input {shown}: {e}"))?;
        return Ok(Input::Image {
            image,
            file: Some(path.to_path_buf()),
        });
    }
    if meta.is_dir() {
        return Err(format!("input {shown}: is a directory"));
    }
    Ok(Input::Stream {
        reader: Box::new(file),
        name: shown.to_string(),
    })
}

/// Where plain bytes go.
pub trait Sink {
    /// Write all of `buf`.
    fn put(&mut self, buf: &[u8]) -> Result<(), String>;
    /// Skip `n` zero bytes (a file leaves a hole).
    fn put_zeros(&mut self, buf: &[u8]) -> Result<(), String> {
        self.put(buf)
    }
    /// Everything is written: make it durable where the sink can.
    fn done(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// A channel as a sink; its writes are what the idle watch times.
pub struct ChannelSink<'a> {
    ch: &'a mut dyn Channel,
    idle: &'a IdleWatch,
    exited: Option<std::process::ExitStatus>,
    /// `--max-bandwidth`: the cap and the largest piece written at once.
    limit: Option<(transit_multifd::rate::RateLimit, usize)>,
}

impl<'a> ChannelSink<'a> {
    /// Write into `ch`, timed by `idle`.
    pub fn new(ch: &'a mut dyn Channel, idle: &'a IdleWatch) -> ChannelSink<'a> {
        ChannelSink {
            ch,
            idle,
            exited: None,
            limit: None,
        }
    }

    /// Cap the rate at `bytes_per_second` (`--max-bandwidth`), in pieces of
    /// 25 ms worth of it so the flow stays even.
    pub fn with_limit(mut self, bytes_per_second: Option<u64>) -> ChannelSink<'a> {
        self.limit = bytes_per_second.map(|r| {
            let piece = transit_multifd::rate::packet_limit(COPY_BUF as u32, 512, r) as usize;
            (transit_multifd::rate::RateLimit::new(r), piece)
        });
        self
    }

    /// The exit status of a command whose end failed a write (the error
    /// said so already).
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.exited
    }
}

impl Sink for ChannelSink<'_> {
    fn put(&mut self, buf: &[u8]) -> Result<(), String> {
        let piece = self.limit.as_ref().map_or(buf.len().max(1), |(_, p)| *p);
        for part in buf.chunks(piece) {
            if let Some((limit, _)) = &self.limit {
                limit.take(part.len() as u64, || false);
            }
            self.idle.waiting(true);
            let r = chio::write_all(self.ch, part).map_err(|e| {
                self.exited = e.exit_status();
                format!("send: {e}")
            });
            self.idle.waiting(false);
            r?;
        }
        Ok(())
    }
}

/// A file as a sink; zero runs become holes (the length is set at the end
/// with [`FileSink::finish`]).
pub struct FileSink {
    /// The file.
    pub file: File,
    /// Bytes so far (holes included).
    pub len: u64,
    /// What to call it in errors.
    pub name: String,
}

impl FileSink {
    /// Set the final length (a trailing hole).
    pub fn finish(&mut self) -> Result<(), String> {
        self.file
            .set_len(self.len)
            .map_err(|e| format!("write {}: {e}", self.name))
    }
}

impl Sink for FileSink {
    fn put(&mut self, buf: &[u8]) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(buf, self.len)
            .map_err(|e| format!("write {}: {e}", self.name))?;
        self.len += buf.len() as u64;
        Ok(())
    }

    fn put_zeros(&mut self, buf: &[u8]) -> Result<(), String> {
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// Any writer (stdout) as a sink.
pub struct WriteSink<W: Write>(pub W);

impl<W: Write> Sink for WriteSink<W> {
    fn put(&mut self, buf: &[u8]) -> Result<(), String> {
        self.0
            .write_all(buf)
            .map_err(|e| format!("write output: {e}"))
    }

    fn done(&mut self) -> Result<(), String> {
        self.0.flush().map_err(|e| format!("write output: {e}"))
    }
}

/// Copy the whole input into `sink` in [`COPY_BUF`] pieces, counting into
/// `count`. Image pieces that are all zero go through `put_zeros`.
pub fn copy_input(input: Input, sink: &mut dyn Sink, count: &AtomicU64) -> Result<u64, String> {
    match input {
        Input::Image { image, .. } => {
            for piece in image.as_slice().chunks(COPY_BUF) {
                if transit_multifd::zero::is_zero(piece) {
                    sink.put_zeros(piece)?;
                } else {
                    sink.put(piece)?;
                }
                count.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            Ok(image.len() as u64)
        }
        Input::Stream { mut reader, name } => {
            let mut buf = vec![0u8; COPY_BUF];
            let mut total = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => return Ok(total),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read {name}: {e}")),
                };
                sink.put(&buf[..n])?;
                total += n as u64;
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Read `ch` to end of file into `sink`, counting into `count`; the reads
/// are what `idle` times.
pub fn copy_from_channel(
    ch: &mut dyn Channel,
    sink: &mut dyn Sink,
    count: &AtomicU64,
    idle: &IdleWatch,
) -> Result<u64, String> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        idle.waiting(true);
        let read = ch.readv(
            &mut [io::IoSliceMut::new(&mut buf)],
            None,
            transit_channel::ReadFlags::empty(),
        );
        idle.waiting(false);
        let n = read.map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Ok(total);
        }
        sink.put(&buf[..n])?;
        total += n as u64;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
