//! Output paths of the binary: checked before anything listens or
//! connects, written through the library's [`TempOutput`] (complete and
//! durable before it replaces anything) or, for devices, FIFOs and
//! sockets, opened as they are and written in order
//! (see [`transit_multifd::output`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

pub use transit_multifd::output::{OutputTarget, TempOutput};

/// Check an output path and say what it is (symbolic links resolved).
pub fn check_target(target: &Path) -> Result<OutputTarget, String> {
    transit_multifd::output::resolve(target).map_err(|e| format!("output {e}"))
}

/// Open an existing non-regular output (device, FIFO) to write in order:
/// never created, truncated or replaced.
pub fn open_stream(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).open(path)
}
