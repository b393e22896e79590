//! Output paths: what a path names as a destination, and files that
//! appear only when complete.
//!
//! [`resolve`] decides what writing to a path means, as `cp` does:
//! * a symbolic link stands for the file it points to (followed to the
//!   end, dangling links included: the file is created where the link
//!   points);
//! * a regular file, or nothing, is a [`OutputTarget::File`]: the data goes
//!   to a temporary file next to it ([`TempOutput`]) that replaces it only
//!   when complete and durable;
//! * anything else that exists (a character or block device, a FIFO, a
//!   socket) is an [`OutputTarget::Stream`]: it is opened as it is and
//!   written in order, never replaced, never renamed over;
//! * a directory, a missing directory or one this process cannot write
//!   into is an error, found before any data moves.
//!
//! Permissions: a new file is created `0600` (memory images carry
//! secrets) unless the caller gives a mode; a file that replaces an
//! existing one takes over its mode and (where the process may) its owner
//! and group.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//! use std::os::unix::fs::PermissionsExt;
//! use transit_multifd::output::{resolve, OutputTarget, TempOutput};
//!
//! let dir = std::env::temp_dir().join(format!("transit-output-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("out.img");
//! let OutputTarget::File(target) = resolve(&path)? else { unreachable!() };
//! let mut out = TempOutput::create(&target, None)?;
//! out.writer()?.write_all(b"data")?;
//! assert!(!path.exists()); // nothing at the target until it is complete
//! out.persist()?;
//! assert_eq!(std::fs::read(&path)?, b"data");
//! assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The mode of a new output file when the caller gives none.
pub const DEFAULT_MODE: u32 = 0o600;

/// Symbolic links followed at most (as the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// What an output path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// A regular file or nothing yet (symbolic links resolved): written
    /// through a [`TempOutput`] and renamed into place when complete.
    File(PathBuf),
    /// An existing file that is not a regular file (device, FIFO, socket;
    /// symbolic links resolved): opened as it is and written in order.
    Stream(PathBuf),
}

impl OutputTarget {
    /// The resolved path.
    pub fn path(&self) -> &Path {
        match self {
            OutputTarget::File(p) | OutputTarget::Stream(p) => p,
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Decide what writing to `path` means (see the [module
/// documentation](self)), and check that it can be done: the directory of
/// a file target exists and is writable. Error messages start with the
/// path.
pub fn resolve(path: &Path) -> io::Result<OutputTarget> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    // The kernel's own resolution first: it also knows the magic links of
    // /proc (/dev/stdout -> /proc/self/fd/1 -> a pipe or a terminal).
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(invalid(format!("{} is a directory", path.display()))),
        Ok(m) if m.is_file() => {
            let is_link = fs::symlink_metadata(path).is_ok_and(|l| l.file_type().is_symlink());
            let real = if is_link {
                fs::canonicalize(path).map_err(named)?
            } else {
                path.to_path_buf()
            };
            file_target(real, path)
        }
        // Opening the path follows the same links to the same object.
        Ok(_) => Ok(OutputTarget::Stream(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => dangling(path),
        Err(e) => Err(named(e)),
    }
}

/// A path that names nothing yet, perhaps through dangling symbolic
/// links: the file is created where the last link points.
fn dangling(path: &Path) -> io::Result<OutputTarget> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&p).map_err(named)?;
                p = if link.is_absolute() {
                    link
                } else {
                    parent_dir(&p).join(link)
                };
            }
            Ok(_) => return resolve(&p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return file_target(p, path),
            Err(e) => return Err(named(e)),
        }
    }
    Err(io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

fn file_target(p: PathBuf, asked: &Path) -> io::Result<OutputTarget> {
    if p.file_name().is_none() {
        return Err(invalid(format!("{} is not a file name", asked.display())));
    }
    let dir = parent_dir(&p);
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid(format!(
                "{}: {} is not a directory",
                asked.display(),
                dir.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "{}: directory {} does not exist",
                asked.display(),
                dir.display()
            )))
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", asked.display()),
            ))
        }
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("{} contains a NUL byte", asked.display())))?;
    // SAFETY: access() reads the NUL-terminated path and nothing else.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "{}: cannot create files in {}: {e}",
                asked.display(),
                dir.display()
            ),
        ));
    }
    Ok(OutputTarget::File(p))
}

/// The directory a path's file lives in (`.` for a bare name).
pub(crate) fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A temporary file (`.NAME.transit-PID-RAND.tmp`, in the target's
/// directory) that becomes the target on [`persist`](Self::persist), and
/// is unlinked when dropped before that. A process killed with SIGKILL
/// cannot clean up: its temporary file stays, the target is untouched.
#[derive(Debug)]
pub struct TempOutput {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    persisted: bool,
    /// A resumable partial file: left in place when not persisted.
    keep: bool,
}

impl TempOutput {
    /// Create the temporary file for `target` (a resolved
    /// [`OutputTarget::File`] path). Its mode is `mode` if given, else the
    /// existing target's mode (and owner, where allowed), else
    /// [`DEFAULT_MODE`].
    pub fn create(target: &Path, mode: Option<u32>) -> io::Result<TempOutput> {
        let tmp = temp_path_for(target)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(DEFAULT_MODE)
            .open(&tmp)?;
        let out = TempOutput {
            file,
            tmp,
            target: target.to_path_buf(),
            persisted: false,
            keep: false,
        };
        out.set_owner_and_mode(target, mode)?;
        Ok(out)
    }

    /// The resumable partial file of `target` ([`partial_path_for`]):
    /// opened as it is if an interrupted transfer left it (returns true),
    /// else created empty with the mode [`create`](Self::create) would
    /// give. It is never removed: a failed or killed transfer leaves it for
    /// the next run; [`persist`](Self::persist) renames it over the
    /// target. An exclusive lock (`flock`) keeps two receivers from
    /// resuming the same file at once.
    pub fn open_partial(target: &Path, mode: Option<u32>) -> io::Result<(TempOutput, bool)> {
        let tmp = partial_path_for(target)?;
        let existed = fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_file());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(DEFAULT_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // SAFETY: flock on our own open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is being resumed by another receiver", tmp.display()),
            ));
        }
        let out = TempOutput {
            file,
            tmp,
            target: target.to_path_buf(),
            persisted: false,
            keep: true,
        };
        if !existed {
            out.set_owner_and_mode(target, mode)?;
        }
        Ok((out, existed))
    }

    /// Give the file the existing target's owner (where allowed) and
    /// `mode`, else the target's mode.
    fn set_owner_and_mode(&self, target: &Path, mode: Option<u32>) -> io::Result<()> {
        let out = self;
        // From here `out` unlinks the file if anything fails.
        let existing = fs::metadata(target).ok().filter(|m| m.is_file());
        let fd = out.file.as_raw_fd();
        if let Some(m) = &existing {
            // Keep the owner where we may (root, or our own file with a
            // group we are in); elsewhere the file becomes ours, as with
            // any writer that replaces a file.
            // SAFETY: fchown on our own open descriptor.
            unsafe { libc::fchown(fd, m.uid(), m.gid()) };
        }
        let mode = mode.or(existing.map(|m| m.mode() & 0o7777));
        if let Some(mode) = mode {
            // Exact, not reduced by the umask; after fchown, which may
            // clear set-id bits.
            // SAFETY: fchmod on our own open descriptor.
            if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A second handle on the temporary file, to write through.
    pub fn writer(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// The temporary path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The path the file becomes.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Make the file durable and move it into place: `fsync`, rename over
    /// the target, `fsync` the directory. Calling it again does nothing.
    pub fn persist(&mut self) -> io::Result<()> {
        if self.persisted {
            return Ok(());
        }
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.target)?;
        self.persisted = true;
        if let Ok(d) = File::open(parent_dir(&self.target)) {
            // Best effort: some file systems refuse fsync on directories.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.persisted && !self.keep {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Where `recv --resume` keeps an unfinished output: `.NAME.transit-partial`
/// next to the target (never the target itself).
pub fn partial_path_for(target: &Path) -> io::Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| invalid(format!("{} has no file name", target.display())))?;
    let mut p = OsString::from(".");
    p.push(name);
    p.push(".transit-partial");
    Ok(target.with_file_name(p))
}

fn temp_path_for(target: &Path) -> io::Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| invalid(format!("{} has no file name", target.display())))?;
    let mut nonce = [0u8; 8];
    crate::random_bytes(&mut nonce);
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".transit-{}-{:016x}.tmp",
        std::process::id(),
        u64::from_ne_bytes(nonce)
    ));
    Ok(target.with_file_name(tmp))
}

/// An existing non-regular output (device, FIFO, socket) opened to write
/// in order. `flush` makes a block device durable (`fdatasync`), as
/// putting a file in place does; a FIFO or a character device has nothing
/// to sync.
#[derive(Debug)]
pub struct StreamTarget {
    file: File,
    block: bool,
}

impl io::Write for StreamTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
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
    widen_pipe(&file);
    Ok(StreamTarget { file, block })
}

/// A [`TempOutput`] next to `target` and a file to write it through
/// (errors name the path and the step).
pub fn temp_writer(target: &Path, mode: Option<u32>) -> io::Result<(File, TempOutput)> {
    let named = |what: String, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let t = TempOutput::create(target, mode)
        .map_err(|e| named(format!("create output next to {}", target.display()), e))?;
    let w = t
        .writer()
        .map_err(|e| named(format!("open {}", t.temp_path().display()), e))?;
    Ok((w, t))
}

/// This process' standard output as a file (a duplicate of fd 1), its
/// pipe widened when it is one ([`widen_pipe`]).
pub fn stdout_file() -> io::Result<File> {
    use std::os::fd::AsFd;
    let f = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    widen_pipe(&f);
    Ok(f)
}

/// Bytes a pipe that transit reads or writes in bulk is widened to.
pub const PIPE_SIZE: usize = 1 << 20;

/// If `fd` is a pipe (or FIFO) holding less than [`PIPE_SIZE`], widen it
/// to that (`F_SETPIPE_SZ`, within the system's `pipe-max-size` for an
/// unprivileged user); the new size, or `None` when `fd` is not a pipe or
/// the kernel refused (the pipe then works as it was).
///
/// A pipe holds 64 KiB by default: a producer and a consumer moving
/// hundreds of MB/s through it (QEMU writing its migration stream into
/// `transit send --input -`, `transit recv --output -` writing into QEMU)
/// then take turns every 64 KiB, a context switch each. A wider pipe
/// lets each side move a whole packet per wake-up.
pub fn widen_pipe(fd: &impl AsRawFd) -> Option<usize> {
    let fd = fd.as_raw_fd();
    // SAFETY: fstat on a borrowed descriptor fills a stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return None;
    }
    // SAFETY: F_GETPIPE_SZ and F_SETPIPE_SZ read or resize the pipe
    // behind a borrowed descriptor; neither touches memory of ours.
    let now = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if now < 0 {
        return None;
    }
    if now as usize >= PIPE_SIZE {
        return Some(now as usize);
    }
    // SAFETY: as above.
    let set = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
    (set > 0).then_some(set as usize)
}

/// Where a receiver's output goes, as a person names it: nothing (verify
/// and discard), `-` (standard output), a regular file (written next to
/// the target, renamed into place once verified and durable) or an
/// existing device, FIFO or socket (written in order, never replaced).
/// One type serves a session ([`Output::image_destination`] or [`Output::stream_writer`], then
/// [`Output::commit`] in [`Receiver::run_with`](crate::Receiver::run_with))
/// and a plain copy ([`Output::stream_writer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Verified and discarded.
    Discard,
    /// Standard output.
    Stdout,
    /// A regular file (or nothing yet), renamed into place on success.
    File(PathBuf),
    /// An existing device, FIFO or socket: opened as it is and written in
    /// order, never replaced.
    Device(PathBuf),
}

impl Output {
    /// `None`: discard; `-`: standard output; else what [`resolve`] says
    /// the path is (errors start with the path).
    pub fn from_arg(path: Option<&Path>) -> io::Result<Output> {
        Ok(match path {
            None => Output::Discard,
            Some(p) if p.as_os_str() == "-" => Output::Stdout,
            Some(p) => match resolve(p)? {
                OutputTarget::File(t) => Output::File(t),
                OutputTarget::Stream(t) => Output::Device(t),
            },
        })
    }

    /// How reports name it (`-`, the path; nothing when discarded).
    pub fn describe(&self) -> Option<String> {
        match self {
            Output::Discard => None,
            Output::Stdout => Some("-".into()),
            Output::File(p) | Output::Device(p) => Some(p.display().to_string()),
        }
    }

    /// The default bound of an image's data ([`crate::room`]): the free
    /// space of a file's file system, else the memory available.
    pub fn max_image_size(&self) -> Option<crate::wire::SizeLimit> {
        match self {
            Output::File(p) => crate::room::free_space(p),
            Output::Discard | Output::Stdout | Output::Device(_) => crate::room::memory_available(),
        }
    }

    /// Where an image goes: into the file, or into memory (each page
    /// allocated as its data arrives, zero pages never touched) that [`commit`](Self::commit)
    /// writes out or frees.
    pub fn image_destination(&self, mode: Option<u32>) -> crate::Destination {
        match self {
            Output::File(path) => crate::Destination::File {
                path: path.clone(),
                mode,
            },
            Output::Discard | Output::Stdout | Output::Device(_) => {
                crate::Destination::Memory { prefault: false }
            }
        }
    }

    /// A writer for a stream (bytes in order) into the output; for a file,
    /// the [`TempOutput`] that [`commit`](Self::commit) puts in place.
    #[allow(clippy::type_complexity)]
    pub fn stream_writer(
        &self,
        mode: Option<u32>,
    ) -> io::Result<(Box<dyn io::Write + Send>, Option<TempOutput>)> {
        Ok(match self {
            Output::Discard => (Box::new(io::sink()), None),
            Output::Stdout => (
                Box::new(
                    stdout_file().map_err(|e| io::Error::new(e.kind(), format!("stdout: {e}")))?,
                ),
                None,
            ),
            Output::Device(p) => (
                Box::new(open_stream(p).map_err(|e| {
                    io::Error::new(e.kind(), format!("open {} for writing: {e}", p.display()))
                })?),
                None,
            ),
            Output::File(p) => {
                let (w, t) = temp_writer(p, mode)?;
                (Box::new(w), Some(t))
            }
        })
    }

    /// Put a verified session's outcome where it belongs: flush the
    /// stream, move a stream's temporary file (`temp`) or the image file
    /// into place, write a memory image out, or free it (discarded, before
    /// the sender is told: freeing a large image is part of what the user
    /// waits for). Meant for the commit step of
    /// [`Receiver::run_with`](crate::Receiver::run_with), which runs it
    /// before it answers the sender, so the sender's success means the
    /// output is in place, and this step's failure is what the sender
    /// hears.
    pub fn commit(
        &self,
        temp: Option<TempOutput>,
        out: &mut crate::RecvOutcome,
    ) -> crate::Result<()> {
        use crate::Error;
        use std::io::Write;
        let in_place = |e: io::Error, p: &Path| {
            Error::data(format!("put the output in place at {}", p.display()), e)
        };
        if let Some(w) = out.writer.as_mut() {
            w.flush().map_err(|e| Error::data("write the output", e))?;
        }
        if let Some(mut t) = temp {
            t.persist().map_err(|e| in_place(e, t.target()))?;
        }
        let Some(img) = out.image.as_mut() else {
            return Ok(());
        };
        match self {
            Output::Discard => {
                out.image = None;
                Ok(())
            }
            Output::File(p) => img.persist_in_place().map_err(|e| in_place(e, p)),
            Output::Stdout => stdout_file()
                .and_then(|mut f| f.write_all(img.as_slice()))
                .map_err(|e| Error::data("write the image to stdout", e)),
            Output::Device(p) => open_stream(p)
                .and_then(|mut f| {
                    f.write_all(img.as_slice())?;
                    f.flush()
                })
                .map_err(|e| Error::data(format!("write the image to {}", p.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("transit-output-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pipes_are_widened_and_other_files_left_alone() {
        let (r, w) = std::io::pipe().unwrap();
        // SAFETY: F_GETPIPE_SZ on a pipe we own.
        let size = |fd: i32| unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
        assert!((size(r.as_raw_fd()) as usize) < PIPE_SIZE);
        assert_eq!(widen_pipe(&w), Some(PIPE_SIZE));
        assert_eq!(
            size(r.as_raw_fd()) as usize,
            PIPE_SIZE,
            "one pipe, both ends"
        );
        // Already wide: left as it is.
        assert_eq!(widen_pipe(&r), Some(PIPE_SIZE));
        let d = scratch("widen");
        let f = File::create(d.join("plain")).unwrap();
        assert_eq!(widen_pipe(&f), None);
        fs::remove_dir_all(&d).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn persist_moves_the_file_into_place_and_dropping_leaves_nothing() {
        let d = scratch("persist");
        let target = d.join("out.bin");
        let mut t = TempOutput::create(&target, None).unwrap();
        t.writer().unwrap().write_all(b"hello").unwrap();
        assert!(!target.exists());
        let tmp = t.temp_path().to_path_buf();
        t.persist().unwrap();
        t.persist().unwrap();
        drop(t);
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert!(!tmp.exists());
        let t = TempOutput::create(&d.join("other"), None).unwrap();
        t.writer().unwrap().write_all(b"partial").unwrap();
        drop(t);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn new_files_are_private_existing_ones_keep_their_mode() {
        let d = scratch("mode");
        let new = d.join("new");
        TempOutput::create(&new, None).unwrap().persist().unwrap();
        assert_eq!(mode(&new), 0o600);
        let given = d.join("given");
        TempOutput::create(&given, Some(0o640))
            .unwrap()
            .persist()
            .unwrap();
        assert_eq!(mode(&given), 0o640);
        let old = d.join("old");
        fs::write(&old, b"x").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o604)).unwrap();
        TempOutput::create(&old, None).unwrap().persist().unwrap();
        assert_eq!(mode(&old), 0o604);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn links_devices_and_directories_resolve_as_cp_would() {
        let d = scratch("resolve");
        let file = d.join("file");
        assert_eq!(resolve(&file).unwrap(), OutputTarget::File(file.clone()));
        fs::write(&file, b"x").unwrap();
        let link = d.join("link");
        symlink("file", &link).unwrap();
        assert_eq!(resolve(&link).unwrap(), OutputTarget::File(d.join("file")));
        let dangling = d.join("dangling");
        symlink(d.join("later"), &dangling).unwrap();
        assert_eq!(
            resolve(&dangling).unwrap(),
            OutputTarget::File(d.join("later"))
        );
        let null = d.join("null");
        symlink("/dev/null", &null).unwrap();
        assert_eq!(resolve(&null).unwrap(), OutputTarget::Stream(null.clone()));
        assert_eq!(
            resolve(Path::new("/dev/null")).unwrap(),
            OutputTarget::Stream("/dev/null".into())
        );
        let loop_a = d.join("a");
        symlink("b", &loop_a).unwrap();
        symlink("a", d.join("b")).unwrap();
        assert!(resolve(&loop_a).is_err());
        let e = resolve(&d).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = resolve(&d.join("nope/x")).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_output_named_by_a_person_and_a_stream_into_a_file() {
        let dir = std::env::temp_dir().join(format!("transit-output-arg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(Output::from_arg(None).unwrap(), Output::Discard);
        assert_eq!(
            Output::from_arg(Some(Path::new("-"))).unwrap(),
            Output::Stdout
        );
        assert!(Output::from_arg(Some(&dir)).is_err());
        let target = dir.join("s.bin");
        let out = Output::from_arg(Some(&target)).unwrap();
        assert_eq!(out, Output::File(target.clone()));
        assert_eq!(out.describe(), Some(target.display().to_string()));
        let (mut w, temp) = out.stream_writer(None).unwrap();
        std::io::Write::write_all(&mut w, b"stream").unwrap();
        drop(w);
        assert!(!target.exists(), "nothing at the target before the commit");
        temp.expect("a temporary file").persist().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"stream");
        fs::remove_dir_all(&dir).unwrap();
    }
}
