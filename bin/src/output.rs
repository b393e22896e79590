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

/// An existing non-regular output (device, FIFO, socket) opened to write
/// in order. `flush` makes a block device durable (`fdatasync`), as
/// putting a file in place does; a FIFO or a character device has nothing
/// to sync.
pub struct StreamTarget {
    file: File,
    block: bool,
}

impl io::Write for StreamTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.block {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// Open an existing non-regular output (device, FIFO) to write in order:
/// never created, truncated or replaced.
pub fn open_stream(path: &Path) -> io::Result<StreamTarget> {
    use std::os::unix::fs::FileTypeExt;
    let file = OpenOptions::new().write(true).open(path)?;
    let block = file.metadata()?.file_type().is_block_device();
    Ok(StreamTarget { file, block })
}
