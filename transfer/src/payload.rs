//! What a send sends: a RAM-like image (generated, or a regular file
//! mapped read-only) or a byte stream (stdin, a pipe, a device, an empty
//! file), as an [`Input`] for [`crate::send::send`].
//!
//! An image is sent in pages, in any order, and may be re-dirtied between
//! passes; a stream is read once, in order, to its end. The plain byte
//! copies of `--raw` and `file:` take either ([`copy_input`], see
//! [`transit_multifd::copy`]).
//!
//! Limits: a mapped file must not change while it is sent (the receiver's
//! verification fails if it does); an empty regular file is a stream (an
//! image has at least one page).
//!
//! ```
//! use std::sync::atomic::AtomicU64;
//! use transit_multifd::copy::WriteSink;
//! use transit_transfer::payload::{copy_input, generate, Input};
//!
//! let input = generate(1 << 20, 4096, 0.5, 7, false)?;
//! assert!(matches!(input, Input::Image { file: None, .. }));
//! let mut out = WriteSink(Vec::new());
//! let n = copy_input(input, &mut out, &AtomicU64::new(0))?;
//! assert_eq!(n, 1 << 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use transit_multifd::copy::{copy_image, copy_reader, CopyError, Sink};
use transit_multifd::{Content, ImageSpec, SourceImage};

use crate::Error;

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

impl Input {
    /// The file the payload comes from (not stdin, not a generated image).
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            Input::Image { file, .. } => file.clone(),
            Input::Stream { name, .. } if name != "stdin" => Some(PathBuf::from(name)),
            Input::Stream { .. } => None,
        }
    }
}

/// Generate an image of `size` bytes in pages of `page_size`, a share
/// `zero_ratio` of them zero, the rest random from `seed` (or
/// compressible text).
pub fn generate(
    size: u64,
    page_size: u32,
    zero_ratio: f64,
    seed: u64,
    compressible: bool,
) -> Result<Input, Error> {
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
    let image = SourceImage::generate(&spec).map_err(|source| Error::Generate { size, source })?;
    Ok(Input::Image { image, file: None })
}

/// Open an input: `-` is stdin (a stream); a non-empty regular file is
/// mapped as an image when `map` is true; anything else is a stream.
pub fn open(path: &Path, map: bool) -> Result<Input, Error> {
    if path.as_os_str() == "-" {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(Error::Stdin)?;
        transit_multifd::output::widen_pipe(&fd);
        return Ok(Input::Stream {
            reader: Box::new(File::from(fd)),
            name: "stdin".into(),
        });
    }
    let failed = |source| Error::Input {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if map && meta.is_file() && meta.len() > 0 {
        let image = SourceImage::map_file(path).map_err(|source| Error::MapInput {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Input::Image {
            image,
            file: Some(path.to_path_buf()),
        });
    }
    if meta.is_dir() {
        return Err(Error::InputIsDirectory {
            path: path.to_path_buf(),
        });
    }
    transit_multifd::output::widen_pipe(&file);
    Ok(Input::Stream {
        reader: Box::new(file),
        name: path.display().to_string(),
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
