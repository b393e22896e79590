//! How large an image a receiver can take, by default (`recv` without
//! `--max-size`): the bound goes into
//! [`RecvConfig::max_image_size`](crate::RecvConfig), so a
//! sender's header that claims more is refused before anything is
//! allocated.
//!
//! - An image received into memory (no `--output`, `--output -`, a
//!   device): at most `MemAvailable` of `/proc/meminfo`.
//! - An image received into a file: at most the free space of the
//!   output's file system (`statvfs`, blocks available to us). An existing
//!   output file adds nothing: the new one is written next to it, and the
//!   old one goes only at the rename.
//!
//! The bound is compared with the session header's `data_bytes`: the
//! image less the holes the sender knows of (a sparse file's), which it
//! sends as ranges that cost the destination nothing. A sender that then
//! puts data in more pages than it announced is refused mid-session.
//!
//! Where the number cannot be learnt, there is no bound.

use std::path::Path;

use crate::wire::SizeLimit;

/// The bound for an image kept in memory.
pub fn memory_available() -> Option<SizeLimit> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_available(&text).map(SizeLimit::MemoryAvailable)
}

/// `MemAvailable` in bytes from the text of `/proc/meminfo`.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line["MemAvailable:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The bound for an image written to the file `target` (which may not
/// exist yet; its directory does).
pub fn free_space(target: &Path) -> Option<SizeLimit> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path, `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    let free = u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize));
    // An existing target is no room: the new file is written next to it
    // and the old one goes only at the rename (or never, if it has other
    // links).
    Some(SizeLimit::FreeSpace(free))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_reads_kib() {
        let t = "MemTotal:       16318508 kB\nMemFree:  1 kB\nMemAvailable:    8000 kB\n";
        assert_eq!(mem_available(t), Some(8000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn free_space_does_not_count_the_file_it_replaces() {
        // A 1 TiB sparse target: were its size counted as room, the answer
        // would exceed the file system's free space by about 1 TiB. (Other
        // writers change the free space meanwhile: by far less than that.)
        let dir = std::env::temp_dir().join(format!("transit-room-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.img");
        std::fs::File::create(&target)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let room = free_space(&target).unwrap().bytes();
        let free = free_space(&dir.join("absent")).unwrap().bytes();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(room < free + (1 << 39), "room {room}, free {free}");
    }
}
