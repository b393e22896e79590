//! What `send` sends: a RAM-like image (generated, or a regular file
//! mapped read-only) or a byte stream (stdin, a pipe, a device, an empty
//! file). The plain byte copies of `--raw` and `file:` are
//! [`transit_multifd::copy`].

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use transit_multifd::copy::{copy_image, copy_reader, CopyError, Sink};
use transit_multifd::{Content, ImageSpec, SourceImage};

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

/// Copy the whole input into `sink` (see [`transit_multifd::copy`]),
/// counting into `count`.
pub fn copy_input(input: Input, sink: &mut dyn Sink, count: &AtomicU64) -> Result<u64, CopyError> {
    match input {
        Input::Image { image, .. } => copy_image(&image, sink, count),
        Input::Stream { mut reader, name } => copy_reader(&mut reader, &name, sink, count),
    }
}
