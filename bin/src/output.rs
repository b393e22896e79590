//! Output files that appear only on success: data is written to a
//! temporary file in the target's directory (`.NAME.transit-PID-RAND.tmp`)
//! and renamed over the target only after the transfer was verified. A
//! failed or cancelled run unlinks the temporary file (on drop), so the
//! target is never a partial file. (A run killed with SIGKILL cannot clean
//! up: its temporary file stays, but the target is untouched.)

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A temporary file that becomes `target` on [`persist`](Self::persist).
#[derive(Debug)]
pub struct TempOutput {
    tmp: PathBuf,
    target: PathBuf,
    file: File,
    persisted: bool,
}

impl TempOutput {
    /// Create the temporary file next to `target`.
    pub fn create(target: &Path) -> io::Result<TempOutput> {
        let tmp = temp_path_for(target)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        Ok(TempOutput {
            tmp,
            target: target.to_path_buf(),
            file,
            persisted: false,
        })
    }

    /// A second handle on the temporary file, to write through.
    pub fn writer(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// The temporary path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Sync the file, rename it over the target and sync the directory.
    pub fn persist(mut self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.target)?;
        self.persisted = true;
        sync_parent(&self.target);
        Ok(self.target.clone())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Check that `target` can be an output file: not a directory, and its
/// directory exists.
pub fn check_target(target: &Path) -> Result<(), String> {
    if target.file_name().is_none() {
        return Err(format!("output {}: not a file name", target.display()));
    }
    if target.is_dir() {
        return Err(format!("output {}: is a directory", target.display()));
    }
    let dir = parent_dir(target);
    if !dir.is_dir() {
        return Err(format!(
            "output {}: directory {} does not exist",
            target.display(),
            dir.display()
        ));
    }
    Ok(())
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn sync_parent(target: &Path) {
    if let Ok(d) = File::open(parent_dir(target)) {
        // Best effort: some file systems refuse fsync on directories.
        let _ = d.sync_all();
    }
}

fn temp_path_for(target: &Path) -> io::Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "output has no file name"))?;
    let mut nonce = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the valid 8-byte buffer.
    let n = unsafe { libc::getrandom(nonce.as_mut_ptr().cast(), nonce.len(), 0) };
    if n != nonce.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nonce = t.to_ne_bytes();
    }
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".transit-{}-{:016x}.tmp",
        std::process::id(),
        u64::from_ne_bytes(nonce)
    ));
    Ok(target.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("transit-out-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn persist_moves_the_file_into_place() {
        let d = scratch("persist");
        let target = d.join("out.bin");
        let t = TempOutput::create(&target).unwrap();
        t.writer().unwrap().write_all(b"hello").unwrap();
        assert!(!target.exists());
        let tmp = t.temp_path().to_path_buf();
        t.persist().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert!(!tmp.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn dropping_leaves_nothing() {
        let d = scratch("drop");
        let target = d.join("out.bin");
        let t = TempOutput::create(&target).unwrap();
        t.writer().unwrap().write_all(b"partial").unwrap();
        drop(t);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn targets_are_checked() {
        let d = scratch("check");
        assert!(check_target(&d).unwrap_err().contains("is a directory"));
        assert!(check_target(&d.join("nope/x"))
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_target(&d.join("x")).is_ok());
        fs::remove_dir_all(&d).unwrap();
    }
}
