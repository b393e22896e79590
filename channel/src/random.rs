//! Random bytes from the kernel (`getrandom(2)`), for keys, tokens and
//! names: websocket mask keys, session uuids, join tokens, temporary file
//! names.
//!
//! ```
//! let mut token = [0u8; 16];
//! transit_channel::random::fill(&mut token)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;

/// Fill `buf` from `getrandom(2)` (retrying on `EINTR`).
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes
        // for the duration of the call; getrandom writes at most that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        done += n as usize;
    }
    Ok(())
}
