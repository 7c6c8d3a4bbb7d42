//! The host-wide table file (D16): where it lives, what it is called, and how a process joins
//! it or initialises it. Every check that could let another user read or plant a table is
//! here, and each failure is a typed [`Refusal`]: the caller then keeps a private table and
//! logs one warning. No `unsafe` here: mapping and locking are `sys`'s.

use std::ffi::OsString;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::sys::{self, Mapping};

/// Words of the header that opens the file: one page, so the table starts page-aligned.
pub(crate) const HEADER_WORDS: usize = 512;

/// Header word: [`MAGIC_VALUE`], so a stray file of the right size is not taken for a table.
pub(crate) const MAGIC: usize = 0;
/// Header word: [`FORMAT_VERSION`].
pub(crate) const VERSION: usize = 1;
/// Header word: the caller's layout hash, so builds with another table layout never share.
pub(crate) const LAYOUT: usize = 2;
/// Header words `BOOT_ID` and `BOOT_ID + 1`: the kernel's boot id, as two little-endian
/// halves. A table from before a reboot holds leases of processes that no longer exist.
pub(crate) const BOOT_ID: usize = 3;
/// Header word: [`READY`] once initialised, written last; anything else means "not yet" (or
/// the initialiser died).
pub(crate) const STATE: usize = 5;
/// Header word for the driver; zeroed on initialisation.
pub(crate) const DIRTY: usize = 6;
/// Header word waiters sleep on; zeroed on initialisation.
pub(crate) const WAKE: usize = 7;
/// Header words reserved for the driver's allocator; only ever zeroed here.
pub(crate) const ALLOC: std::ops::Range<usize> = 8..16;

/// The value of the [`MAGIC`] word.
pub(crate) const MAGIC_VALUE: u64 = u64::from_le_bytes(*b"IMDSTAB1");
/// The value of the [`VERSION`] word; also in the file name, so formats never meet.
pub(crate) const FORMAT_VERSION: u64 = 1;
/// The value of the [`STATE`] word once the table is usable.
pub(crate) const READY: u64 = u64::from_le_bytes(*b"READY\0\0\0");

/// Lock byte held while (re)initialising the file, and briefly by every opener.
pub(crate) const INIT_LOCK: u64 = 0;
/// Lock byte writers of the table hold.
pub(crate) const WRITE_LOCK: u64 = 1;

/// Lock byte of a lease on `slot`, held by the fetching process. Byte locks may lie beyond
/// the end of the file, so these cost no space.
pub(crate) const fn lease_lock(slot: u32) -> u64 {
    4096 + slot as u64
}

/// The variable that names the directory outright.
const DIR_VAR: &str = "IMDS_CACHE_DIR";
/// The per-user runtime directory of the XDG base directory specification.
const XDG_VAR: &str = "XDG_RUNTIME_DIR";
/// How long an opener waits for another process to finish initialising.
const INIT_WAIT: Duration = Duration::from_secs(1);

/// Why the shared table is not used. Each names the path and what is wrong with it.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The directory is not one only the effective uid can use.
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: DirectoryProblem,
    },
    /// A system call failed.
    Io {
        /// The file or directory it was about.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The file's path is a symbolic link (`O_NOFOLLOW` refused it).
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// The file's path is a directory, a socket, a FIFO or a device.
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// The file belongs to another uid.
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        found: u32,
        /// The effective uid.
        expected: u32,
    },
    /// The file's permission bits are not exactly 0600.
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits (with the set-id and sticky bits).
        found: u32,
    },
    /// The file has another name too: whoever made that link can reach it elsewhere.
    Links {
        /// The file.
        path: PathBuf,
        /// Its link count.
        found: u64,
    },
    /// The file is neither new (empty) nor of this layout's size.
    Size {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        found: u64,
        /// The size of this layout.
        expected: u64,
    },
    /// The header is not one this build wrote: the file is left alone.
    Header {
        /// The file.
        path: PathBuf,
        /// The word that differs.
        field: HeaderField,
        /// Its value.
        found: u64,
        /// The value this build expects.
        expected: u64,
    },
    /// Another process held the init lock for all of [`INIT_WAIT`].
    Busy {
        /// The file.
        path: PathBuf,
    },
}

/// What is wrong with the directory of [`Refusal::Directory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectoryProblem {
    /// `IMDS_CACHE_DIR` is relative: it would depend on the working directory.
    NotAbsolute,
    /// The path is not a directory.
    NotDirectory,
    /// The path is a symbolic link, which whoever can write its parent may point anywhere.
    Symlink,
    /// The directory belongs to another uid.
    Owner {
        /// Its owner.
        found: u32,
        /// The effective uid.
        expected: u32,
    },
    /// The directory's permission bits are not 0700.
    Mode {
        /// Its permission bits.
        found: u32,
    },
}

/// The header word of [`Refusal::Header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderField {
    /// [`MAGIC`].
    Magic,
    /// [`VERSION`].
    Version,
    /// [`LAYOUT`].
    Layout,
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Magic => "magic",
            Self::Version => "format version",
            Self::Layout => "layout hash",
        })
    }
}

/// Why permission bits `found` are not `wanted` (which grants the owner only), in words.
fn mode_reason(found: u32, wanted: u32) -> &'static str {
    let group = found & 0o070 != 0;
    let others = found & 0o007 != 0;
    if found & 0o7000 != 0 {
        "set-id or sticky bits are set"
    } else if group && others {
        "group and others have access"
    } else if group {
        "the group has access"
    } else if others {
        "others have access"
    } else if found & 0o700 & !wanted != 0 {
        "the owner has more access than needed"
    } else {
        "the owner lacks access"
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory { path, problem } => {
                let path = path.display();
                match *problem {
                    DirectoryProblem::NotAbsolute => {
                        write!(f, "{path}: {DIR_VAR} must be an absolute path")
                    }
                    DirectoryProblem::NotDirectory => write!(f, "{path}: not a directory"),
                    DirectoryProblem::Symlink => {
                        write!(f, "{path}: a symbolic link, must be a directory")
                    }
                    DirectoryProblem::Owner { found, expected } => write!(
                        f,
                        "{path}: owned by uid {found}, must be owned by uid {expected} \
                         (the effective uid)"
                    ),
                    DirectoryProblem::Mode { found } => write!(
                        f,
                        "{path}: mode {found:04o}, must be 0700 ({})",
                        mode_reason(found, 0o700)
                    ),
                }
            }
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Symlink { path } => write!(
                f,
                "{}: a symbolic link, must be a regular file (not followed)",
                path.display()
            ),
            Self::NotRegular { path } => write!(f, "{}: not a regular file", path.display()),
            Self::Owner {
                path,
                found,
                expected,
            } => write!(
                f,
                "{}: owned by uid {found}, must be owned by uid {expected} (the effective uid)",
                path.display()
            ),
            Self::Mode { path, found } => write!(
                f,
                "{}: mode {found:04o}, must be 0600 ({})",
                path.display(),
                mode_reason(*found, 0o600)
            ),
            Self::Links { path, found } => write!(
                f,
                "{}: {found} hard links, must have exactly 1 (another name can reach it)",
                path.display()
            ),
            Self::Size {
                path,
                found,
                expected,
            } => write!(
                f,
                "{}: {found} bytes, must be 0 (new) or {expected} (this layout)",
                path.display()
            ),
            Self::Header {
                path,
                field,
                found,
                expected,
            } => write!(
                f,
                "{}: {field} is {found:#018x}, expected {expected:#018x} \
                 (not a table this build understands; left unchanged)",
                path.display()
            ),
            Self::Busy { path } => write!(
                f,
                "{}: another process held the init lock for over {} s",
                path.display(),
                INIT_WAIT.as_secs()
            ),
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn io_refusal(path: &Path, error: io::Error) -> Refusal {
    Refusal::Io {
        path: path.to_owned(),
        error,
    }
}

/// Where the table file lives, before any check: `$IMDS_CACHE_DIR`, else
/// `$XDG_RUNTIME_DIR/imds-cache`, else `/run/user/<euid>/imds-cache`. An empty variable counts
/// as unset; a relative `XDG_RUNTIME_DIR` is ignored, as the XDG specification says, and a
/// relative `IMDS_CACHE_DIR` refused (it was asked for explicitly, so silently using another
/// directory would surprise).
fn resolve(env: impl Fn(&str) -> Option<OsString>, euid: u32) -> Result<PathBuf, Refusal> {
    let set = |key: &str| env(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(DIR_VAR) {
        if !dir.is_absolute() {
            return Err(Refusal::Directory {
                path: dir,
                problem: DirectoryProblem::NotAbsolute,
            });
        }
        return Ok(dir);
    }
    if let Some(runtime) = set(XDG_VAR).filter(|p| p.is_absolute()) {
        return Ok(runtime.join("imds-cache"));
    }
    Ok(PathBuf::from(format!("/run/user/{euid}/imds-cache")))
}

/// The directory of the table file (see `resolve` for the order), created with its missing
/// parents, mode 0700, if missing; then refused unless it is a real directory (not a
/// symbolic link) of `euid` that only its owner can use. `env` reads a variable (the caller
/// passes `std::env::var_os`); `euid` is the effective uid (see [`effective_uid`]).
pub(crate) fn directory(
    env: impl Fn(&str) -> Option<OsString>,
    euid: u32,
) -> Result<PathBuf, Refusal> {
    let path = resolve(env, euid)?;
    let created = DirBuilder::new().recursive(true).mode(0o700).create(&path);
    // Checked whether or not that worked: what is there decides, and names the problem
    // better than the creation's error would (a file there, a symlink to elsewhere).
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(error) => return Err(io_refusal(&path, created.err().unwrap_or(error))),
    };
    let problem = if meta.file_type().is_symlink() {
        Some(DirectoryProblem::Symlink)
    } else if !meta.is_dir() {
        Some(DirectoryProblem::NotDirectory)
    } else if meta.uid() != euid {
        Some(DirectoryProblem::Owner {
            found: meta.uid(),
            expected: euid,
        })
    } else if meta.mode() & 0o777 != 0o700 {
        Some(DirectoryProblem::Mode {
            found: meta.mode() & 0o777,
        })
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Refusal::Directory { path, problem }),
        None => Ok(path),
    }
}

/// The effective uid, from the `Uid:` line of `/proc/self/status` (real, effective, saved,
/// filesystem). Not the owner of `/proc/self`: that is root for a non-dumpable process (one
/// that changed ids, or called `prctl(PR_SET_DUMPABLE, 0)`). Read here rather than with
/// `geteuid`, which would be this module's only `unsafe`.
pub(crate) fn effective_uid() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_effective_uid(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/self/status has no readable Uid line",
        )
    })
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// FNV-1a, 64 bits: stable across builds and versions of Rust (std's `DefaultHasher` is not),
/// which matters because every process must derive the same file name.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The table file's name. It carries everything that must match for two processes to share
/// one: the format version, the table layout, the endpoint (its URL, hashed) and the network
/// namespace (processes in different namespaces may reach different endpoints at one URL).
pub(crate) fn file_name(layout_hash: u64, endpoint: &str, netns: u64) -> String {
    format!(
        "table-v{FORMAT_VERSION}-{layout_hash:016x}-{:016x}-{netns}",
        fnv1a_64(endpoint.as_bytes())
    )
}

/// This process's network namespace: the inode number of `/proc/self/ns/net` (the number in
/// its link text `net:[4026531840]`).
pub(crate) fn netns() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

/// The kernel's id of this boot, from `/proc/sys/kernel/random/boot_id`.
pub(crate) fn boot_id() -> io::Result<[u8; 16]> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    parse_boot_id(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/sys/kernel/random/boot_id is not a UUID",
        )
    })
}

/// The 16 bytes of a UUID in its 36-character text form (a trailing newline allowed).
fn parse_boot_id(text: &str) -> Option<[u8; 16]> {
    let text = text.trim_end().as_bytes();
    if text.len() != 36 || [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
        return None;
    }
    let mut digits = text.iter().filter(|&&c| c != b'-');
    let mut id = [0u8; 16];
    for byte in &mut id {
        let hi = char::from(*digits.next()?).to_digit(16)?;
        let lo = char::from(*digits.next()?).to_digit(16)?;
        *byte = (hi << 4 | lo) as u8;
    }
    Some(id)
}

/// The two header words of a boot id.
fn boot_words(boot_id: [u8; 16]) -> [u64; 2] {
    let (a, b) = boot_id.split_at(8);
    [
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    ]
}

/// The mapped table file.
pub(crate) struct Region {
    file: File,
    map: Mapping,
    path: PathBuf,
}

impl Region {
    /// The header: the first [`HEADER_WORDS`] words.
    pub(crate) fn header(&self) -> &[AtomicU64] {
        &self.map.words()[..HEADER_WORDS]
    }

    /// The table: every word after the header.
    pub(crate) fn table(&self) -> &[AtomicU64] {
        &self.map.words()[HEADER_WORDS..]
    }

    /// The open file, for its byte locks.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Where the file is, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("table_words", &self.table().len())
            .finish_non_exhaustive()
    }
}

/// What [`open`] found.
#[derive(Debug)]
pub(crate) enum Opened {
    /// A table initialised in this boot, by this build's layout: use it as it is.
    Joined(Region),
    /// A table to initialise (new, left half-done by a process that died, or from before a
    /// reboot), with the init lock held: reset the table words, then [`Init::ready`].
    Fresh(Region, Init),
}

/// The init lock of a [`Opened::Fresh`] region, and what [`Init::ready`] writes. Dropped
/// without `ready`, it releases the lock and leaves the file not ready, so the next opener
/// initialises it; if the process dies, the kernel releases the lock the same way.
#[derive(Debug)]
pub(crate) struct Init {
    /// A duplicate of the region's descriptor: the same open file description, so the same
    /// lock owner.
    file: File,
    layout_hash: u64,
    boot_id: [u8; 16],
}

impl Init {
    /// Marks `region` (the one [`open`] returned with this `Init`) initialised: the header
    /// words, then [`READY`] with Release so that whoever reads it with Acquire also sees the
    /// table the caller reset; then releases the init lock.
    pub(crate) fn ready(self, region: &Region) {
        let header = region.header();
        header[MAGIC].store(MAGIC_VALUE, Ordering::Relaxed);
        header[VERSION].store(FORMAT_VERSION, Ordering::Relaxed);
        header[LAYOUT].store(self.layout_hash, Ordering::Relaxed);
        let [low, high] = boot_words(self.boot_id);
        header[BOOT_ID].store(low, Ordering::Relaxed);
        header[BOOT_ID + 1].store(high, Ordering::Relaxed);
        header[STATE].store(READY, Ordering::Release);
        // Dropping `self` releases the lock.
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        // Cannot fail on an open descriptor; and if it did, the lock would go when the
        // region's descriptor closes.
        let _ = sys::unlock_byte(&self.file, INIT_LOCK);
    }
}

/// The file's size for `table_words` table words, if it fits.
fn file_len(table_words: usize) -> Option<u64> {
    let words = HEADER_WORDS.checked_add(table_words)?;
    u64::try_from(words.checked_mul(8)?).ok()
}

/// The checks of the open file (fstat, so no race with its path): a regular file of `euid`
/// with one link, mode exactly 0600, and either empty or `expected` bytes long. Its size.
fn check_file(path: &Path, file: &File, euid: u32, expected: u64) -> Result<u64, Refusal> {
    let meta = file.metadata().map_err(|e| io_refusal(path, e))?;
    let path = path.to_owned();
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular { path });
    }
    if meta.uid() != euid {
        return Err(Refusal::Owner {
            path,
            found: meta.uid(),
            expected: euid,
        });
    }
    if meta.nlink() != 1 {
        return Err(Refusal::Links {
            path,
            found: meta.nlink(),
        });
    }
    if meta.mode() & 0o7777 != 0o600 {
        return Err(Refusal::Mode {
            path,
            found: meta.mode() & 0o7777,
        });
    }
    if meta.len() != 0 && meta.len() != expected {
        return Err(Refusal::Size {
            path,
            found: meta.len(),
            expected,
        });
    }
    Ok(meta.len())
}

/// Takes the init lock, retrying for at most [`INIT_WAIT`] while another process holds it.
fn lock_init(path: &Path, file: &File) -> Result<(), Refusal> {
    let deadline = Instant::now() + INIT_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        if sys::try_lock_byte(file, INIT_LOCK).map_err(|e| io_refusal(path, e))? {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Busy {
                path: path.to_owned(),
            });
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The part of [`open`] under the init lock: the size again (another opener may have grown
/// it meanwhile), growing a new file, mapping, and reading the header. `Ok(true)`: to be
/// initialised, its state already cleared.
fn under_init_lock(
    path: &Path,
    file: &File,
    euid: u32,
    len: u64,
    layout_hash: u64,
    boot_id: [u8; 16],
) -> Result<(Mapping, bool), Refusal> {
    if check_file(path, file, euid, len)? == 0 {
        file.set_len(len).map_err(|e| io_refusal(path, e))?;
    }
    let map_len = usize::try_from(len).expect("file_len came from a usize");
    let map = Mapping::new(file, map_len).map_err(|e| io_refusal(path, e))?;
    let header = &map.words()[..HEADER_WORDS];
    let ready = header[STATE].load(Ordering::Acquire) == READY;
    let expected = [
        (HeaderField::Magic, MAGIC, MAGIC_VALUE),
        (HeaderField::Version, VERSION, FORMAT_VERSION),
        (HeaderField::Layout, LAYOUT, layout_hash),
    ];
    for (field, index, want) in expected {
        let found = header[index].load(Ordering::Relaxed);
        // Not ready, a word is still 0 (never written) or ours (written before the writer
        // died, or in an earlier boot); anything else is a file of someone else's.
        if found != want && (ready || found != 0) {
            return Err(Refusal::Header {
                path: path.to_owned(),
                field,
                found,
                expected: want,
            });
        }
    }
    let [low, high] = boot_words(boot_id);
    let this_boot = header[BOOT_ID].load(Ordering::Relaxed) == low
        && header[BOOT_ID + 1].load(Ordering::Relaxed) == high;
    if ready && this_boot {
        return Ok((map, false));
    }
    // Not ready first, so nothing mistakes the table for usable while it is being reset.
    header[STATE].store(0, Ordering::Release);
    for word in [DIRTY, WAKE].into_iter().chain(ALLOC) {
        header[word].store(0, Ordering::Relaxed);
    }
    Ok((map, true))
}

/// Opens (creating it if missing) the table file `name` in `dir` (from [`directory`]), for
/// `table_words` words after the header, checks it, and maps it. Joins a ready table of this
/// layout and boot; hands back a table to initialise otherwise (see [`Opened`]). A header
/// this build did not write is refused and never overwritten. `euid`: see
/// [`effective_uid`].
pub(crate) fn open(
    dir: &Path,
    name: &str,
    euid: u32,
    table_words: usize,
    layout_hash: u64,
    boot_id: [u8; 16],
) -> Result<Opened, Refusal> {
    let path = dir.join(name);
    let len = file_len(table_words).ok_or_else(|| {
        io_refusal(
            &path,
            io::Error::new(io::ErrorKind::InvalidInput, "table too large"),
        )
    })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        // Never truncated: other processes may have it mapped.
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(&path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => Refusal::Symlink { path: path.clone() },
            // A directory (EISDIR), a socket or a device without a driver (ENXIO).
            Some(libc::EISDIR | libc::ENXIO) => Refusal::NotRegular { path: path.clone() },
            _ => io_refusal(&path, error),
        })?;
    // Checked before locking too, so a file that is not ours is not even locked.
    check_file(&path, &file, euid, len)?;
    let init_file = file.try_clone().map_err(|e| io_refusal(&path, e))?;
    lock_init(&path, &file)?;
    match under_init_lock(&path, &file, euid, len, layout_hash, boot_id) {
        Ok((map, true)) => {
            let init = Init {
                file: init_file,
                layout_hash,
                boot_id,
            };
            Ok(Opened::Fresh(Region { file, map, path }, init))
        }
        Ok((map, false)) => {
            sys::unlock_byte(&file, INIT_LOCK).map_err(|e| io_refusal(&path, e))?;
            Ok(Opened::Joined(Region { file, map, path }))
        }
        Err(refusal) => {
            // Closing both descriptors would release it too.
            let _ = sys::unlock_byte(&file, INIT_LOCK);
            Err(refusal)
        }
    }
}

// Files, locks and mappings are system calls Miri does not run.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};

    const NAME: &str = "table-test";
    const WORDS: usize = 64;
    const LAYOUT_HASH: u64 = 0x0123_4567_89ab_cdef;
    const BOOT_A: [u8; 16] = [0xa1; 16];
    const BOOT_B: [u8; 16] = [0xb2; 16];
    /// Set (to the directory) when this test binary runs as the child of
    /// `a_child_killed_while_initialising_leaves_the_file_fresh`.
    const CHILD_VAR: &str = "IMDS_CACHE_REGION_TEST_CHILD";

    /// A directory of this test's own, mode 0700, removed even if the test fails.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("imds-region-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            DirBuilder::new().mode(0o700).create(&path).unwrap();
            Self(path)
        }

        /// Our uid, as the owner of what we create (so the tests work for any user).
        fn uid(&self) -> u32 {
            std::fs::metadata(&self.0).unwrap().uid()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A uid that is not `uid`.
    fn other_uid(uid: u32) -> u32 {
        if uid == 65534 {
            65533
        } else {
            65534
        }
    }

    fn open_a(dir: &Path, boot: [u8; 16]) -> Result<Opened, Refusal> {
        let uid = std::fs::metadata(dir).unwrap().uid();
        open(dir, NAME, uid, WORDS, LAYOUT_HASH, boot)
    }

    fn fresh(dir: &Path, boot: [u8; 16]) -> (Region, Init) {
        match open_a(dir, boot).unwrap() {
            Opened::Fresh(region, init) => (region, init),
            Opened::Joined(region) => panic!("expected a fresh table, joined {region:?}"),
        }
    }

    fn joined(dir: &Path, boot: [u8; 16]) -> Region {
        match open_a(dir, boot).unwrap() {
            Opened::Joined(region) => region,
            Opened::Fresh(region, _) => panic!("expected to join, got a fresh {region:?}"),
        }
    }

    /// A ready table file at `dir/NAME`; its path.
    fn made(dir: &Path) -> PathBuf {
        let (region, init) = fresh(dir, BOOT_A);
        init.ready(&region);
        region.path().to_owned()
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn directory_resolution_prefers_imds_cache_dir_then_xdg_then_run_user() {
        let both = [(DIR_VAR, "/a/cache"), (XDG_VAR, "/run/user/7")];
        assert_eq!(resolve(env(&both), 7).unwrap(), Path::new("/a/cache"));
        let xdg = [(DIR_VAR, ""), (XDG_VAR, "/run/user/7")];
        assert_eq!(
            resolve(env(&xdg), 7).unwrap(),
            Path::new("/run/user/7/imds-cache")
        );
        assert_eq!(
            resolve(env(&[]), 7).unwrap(),
            Path::new("/run/user/7/imds-cache")
        );
        let empty = [(DIR_VAR, ""), (XDG_VAR, "")];
        assert_eq!(
            resolve(env(&empty), 1000).unwrap(),
            Path::new("/run/user/1000/imds-cache")
        );
        let relative_xdg = [(XDG_VAR, "run/user/7")];
        assert_eq!(
            resolve(env(&relative_xdg), 7).unwrap(),
            Path::new("/run/user/7/imds-cache"),
            "a relative XDG_RUNTIME_DIR is ignored"
        );
        let relative = [(DIR_VAR, "cache"), (XDG_VAR, "/run/user/7")];
        assert!(matches!(
            resolve(env(&relative), 7),
            Err(Refusal::Directory {
                problem: DirectoryProblem::NotAbsolute,
                ..
            })
        ));
    }

    #[test]
    fn directory_uses_the_variables_it_resolves() {
        let tmp = TempDir::new("dir-vars");
        let xdg = tmp.0.join("xdg");
        DirBuilder::new().mode(0o700).create(&xdg).unwrap();
        let xdg_text = xdg.to_str().unwrap();
        let got = directory(env(&[(XDG_VAR, xdg_text)]), tmp.uid()).unwrap();
        assert_eq!(got, xdg.join("imds-cache"));
        let own = tmp.0.join("own");
        let own_text = own.to_str().unwrap();
        let got = directory(env(&[(DIR_VAR, own_text), (XDG_VAR, xdg_text)]), tmp.uid());
        assert_eq!(got.unwrap(), own);
    }

    #[test]
    fn a_missing_directory_is_created_0700_with_its_parents() {
        let tmp = TempDir::new("dir-create");
        let deep = tmp.0.join("a/b/imds-cache");
        let got = directory(env(&[(DIR_VAR, deep.to_str().unwrap())]), tmp.uid()).unwrap();
        assert_eq!(got, deep);
        for dir in [tmp.0.join("a"), tmp.0.join("a/b"), deep.clone()] {
            let meta = std::fs::symlink_metadata(&dir).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o777, 0o700, "{}", dir.display());
        }
        // Present now: accepted as it is.
        assert_eq!(
            directory(env(&[(DIR_VAR, deep.to_str().unwrap())]), tmp.uid()).unwrap(),
            deep
        );
    }

    #[test]
    fn a_directory_group_or_others_can_use_is_refused() {
        let tmp = TempDir::new("dir-mode");
        let dir = tmp.0.join("cache");
        DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let vars = [(DIR_VAR, dir.to_str().unwrap())];
        for mode in [0o777, 0o750, 0o701, 0o500] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            match directory(env(&vars), tmp.uid()) {
                Err(Refusal::Directory {
                    path,
                    problem: DirectoryProblem::Mode { found },
                }) => {
                    assert_eq!(path, dir);
                    assert_eq!(found, mode);
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
            // Not "fixed" behind the user's back.
            let now = std::fs::metadata(&dir).unwrap().mode() & 0o777;
            assert_eq!(now, mode);
        }
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let tmp = TempDir::new("dir-symlink");
        let real = tmp.0.join("real");
        DirBuilder::new().mode(0o700).create(&real).unwrap();
        let link = tmp.0.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let got = directory(env(&[(DIR_VAR, link.to_str().unwrap())]), tmp.uid());
        assert!(
            matches!(
                got,
                Err(Refusal::Directory {
                    problem: DirectoryProblem::Symlink,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn a_directory_of_another_uid_or_a_file_is_refused() {
        let tmp = TempDir::new("dir-owner");
        let dir = tmp.0.join("cache");
        let vars = [(DIR_VAR, dir.to_str().unwrap())];
        let other = other_uid(tmp.uid());
        // Created (by us, for us) and then found to be ours, not `other`'s.
        match directory(env(&vars), other) {
            Err(Refusal::Directory {
                problem: DirectoryProblem::Owner { found, expected },
                ..
            }) => assert_eq!((found, expected), (tmp.uid(), other)),
            got => panic!("{got:?}"),
        }
        let file = tmp.0.join("file");
        std::fs::write(&file, b"").unwrap();
        let got = directory(env(&[(DIR_VAR, file.to_str().unwrap())]), tmp.uid());
        assert!(
            matches!(
                got,
                Err(Refusal::Directory {
                    problem: DirectoryProblem::NotDirectory,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn file_names_are_stable_and_carry_every_input() {
        let name = file_name(
            0xabc,
            "http://169.254.169.254/metadata/identity",
            4026531840,
        );
        assert_eq!(
            name,
            file_name(
                0xabc,
                "http://169.254.169.254/metadata/identity",
                4026531840
            )
        );
        assert!(name.starts_with("table-v1-0000000000000abc-"), "{name}");
        assert!(name.ends_with("-4026531840"), "{name}");
        assert!(!name.contains('/'));
        assert_ne!(
            name,
            file_name(
                0xabd,
                "http://169.254.169.254/metadata/identity",
                4026531840
            )
        );
        assert_ne!(
            name,
            file_name(
                0xabc,
                "http://127.0.0.1:40342/metadata/identity",
                4026531840
            )
        );
        assert_ne!(
            name,
            file_name(
                0xabc,
                "http://169.254.169.254/metadata/identity",
                4026531841
            )
        );
        // The published FNV-1a 64 values: the name is the same for every build.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            file_name(1, "a", 2),
            "table-v1-0000000000000001-af63dc4c8601ec8c-2"
        );
    }

    #[test]
    fn lock_bytes_do_not_overlap() {
        assert_ne!(INIT_LOCK, WRITE_LOCK);
        assert_eq!(lease_lock(0), 4096);
        assert!(lease_lock(0) > WRITE_LOCK);
        assert_eq!(lease_lock(u32::MAX), 4096 + u64::from(u32::MAX));
    }

    #[test]
    fn boot_id_and_netns_and_euid_come_from_proc() {
        assert_eq!(
            parse_boot_id("0123abcd-4567-89ef-0a1b-2c3d4e5f6789\n"),
            Some([
                0x01, 0x23, 0xab, 0xcd, 0x45, 0x67, 0x89, 0xef, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f,
                0x67, 0x89
            ])
        );
        assert_eq!(parse_boot_id("0123abcd-4567-89ef-0a1b-2c3d4e5f678"), None);
        assert_eq!(parse_boot_id("0123abcd_4567-89ef-0a1b-2c3d4e5f6789"), None);
        assert_eq!(parse_boot_id("0123abcd-4567-89ef-0a1b-2c3d4e5f678g"), None);
        assert_eq!(boot_id().unwrap(), boot_id().unwrap());

        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        let link = link.to_str().unwrap();
        let number = link.strip_prefix("net:[").and_then(|s| s.strip_suffix(']'));
        assert_eq!(netns().unwrap(), number.unwrap().parse::<u64>().unwrap());

        assert_eq!(
            parse_effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"),
            Some(0)
        );
        let tmp = TempDir::new("euid");
        assert_eq!(effective_uid().unwrap(), tmp.uid());
    }

    #[test]
    fn the_first_open_is_fresh_and_the_second_joins_sharing_words() {
        let tmp = TempDir::new("share");
        let (first, init) = fresh(&tmp.0, BOOT_A);
        assert_eq!(first.header().len(), HEADER_WORDS);
        assert_eq!(first.table().len(), WORDS);
        assert_eq!(first.path(), tmp.0.join(NAME));
        assert_ne!(first.header()[STATE].load(Ordering::Acquire), READY);
        let meta = std::fs::metadata(first.path()).unwrap();
        assert_eq!(meta.len(), ((HEADER_WORDS + WORDS) * 8) as u64);
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert!(sys::byte_is_locked(&File::open(first.path()).unwrap(), INIT_LOCK).unwrap());
        init.ready(&first);
        assert!(!sys::byte_is_locked(&File::open(first.path()).unwrap(), INIT_LOCK).unwrap());
        let header = first.header();
        assert_eq!(header[MAGIC].load(Ordering::Relaxed), MAGIC_VALUE);
        assert_eq!(header[VERSION].load(Ordering::Relaxed), FORMAT_VERSION);
        assert_eq!(header[LAYOUT].load(Ordering::Relaxed), LAYOUT_HASH);
        assert_eq!(header[STATE].load(Ordering::Acquire), READY);

        let second = joined(&tmp.0, BOOT_A);
        first.table()[3].store(0x5eed, Ordering::Release);
        assert_eq!(second.table()[3].load(Ordering::Acquire), 0x5eed);
        second.table()[WORDS - 1].store(7, Ordering::Release);
        assert_eq!(first.table()[WORDS - 1].load(Ordering::Acquire), 7);
        // Joining neither resized nor reset anything.
        drop(second);
        let third = joined(&tmp.0, BOOT_A);
        assert_eq!(third.table()[3].load(Ordering::Acquire), 0x5eed);
    }

    #[test]
    fn a_symlink_at_the_file_path_is_refused() {
        let tmp = TempDir::new("file-symlink");
        let target = tmp.0.join("target");
        std::fs::write(&target, b"").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, tmp.0.join(NAME)).unwrap();
        let got = open_a(&tmp.0, BOOT_A);
        assert!(matches!(got, Err(Refusal::Symlink { .. })), "{got:?}");
        assert_eq!(
            std::fs::metadata(&target).unwrap().len(),
            0,
            "target left alone"
        );

        // Dangling: not created through the link either.
        std::fs::remove_file(&target).unwrap();
        let got = open_a(&tmp.0, BOOT_A);
        assert!(matches!(got, Err(Refusal::Symlink { .. })), "{got:?}");
        assert!(!target.exists());
    }

    #[test]
    fn a_directory_or_socket_at_the_file_path_is_not_regular() {
        let tmp = TempDir::new("file-kind");
        DirBuilder::new()
            .mode(0o700)
            .create(tmp.0.join(NAME))
            .unwrap();
        let got = open_a(&tmp.0, BOOT_A);
        assert!(matches!(got, Err(Refusal::NotRegular { .. })), "{got:?}");
        std::fs::remove_dir(tmp.0.join(NAME)).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(tmp.0.join(NAME)).unwrap();
        let got = open_a(&tmp.0, BOOT_A);
        assert!(matches!(got, Err(Refusal::NotRegular { .. })), "{got:?}");
    }

    #[test]
    fn a_file_of_another_uid_is_refused() {
        let tmp = TempDir::new("file-owner");
        let path = made(&tmp.0);
        let other = other_uid(tmp.uid());
        match open(&tmp.0, NAME, other, WORDS, LAYOUT_HASH, BOOT_A) {
            Err(Refusal::Owner {
                path: p,
                found,
                expected,
            }) => {
                assert_eq!(p, path);
                assert_eq!((found, expected), (tmp.uid(), other));
            }
            got => panic!("{got:?}"),
        }
    }

    #[test]
    fn a_file_group_or_others_can_read_is_refused() {
        let tmp = TempDir::new("file-mode");
        let path = made(&tmp.0);
        for mode in [0o644, 0o640, 0o602, 0o700, 0o4600] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match open_a(&tmp.0, BOOT_A) {
                Err(Refusal::Mode { found, .. }) => assert_eq!(found, mode),
                got => panic!("mode {mode:o}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_hard_linked_file_is_refused() {
        let tmp = TempDir::new("file-links");
        let path = made(&tmp.0);
        std::fs::hard_link(&path, tmp.0.join("elsewhere")).unwrap();
        let got = open_a(&tmp.0, BOOT_A);
        assert!(
            matches!(got, Err(Refusal::Links { found: 2, .. })),
            "{got:?}"
        );
    }

    #[test]
    fn a_file_of_the_wrong_size_is_refused_and_not_resized() {
        let tmp = TempDir::new("file-size");
        let path = made(&tmp.0);
        let expected = ((HEADER_WORDS + WORDS) * 8) as u64;
        for len in [100, expected + 8] {
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len)
                .unwrap();
            match open_a(&tmp.0, BOOT_A) {
                Err(Refusal::Size {
                    found, expected: e, ..
                }) => assert_eq!((found, e), (len, expected)),
                got => panic!("{got:?}"),
            }
            assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        }
        // Another layout's size, through the API.
        let got = open(&tmp.0, NAME, tmp.uid(), WORDS + 2, LAYOUT_HASH, BOOT_A);
        assert!(matches!(got, Err(Refusal::Size { .. })), "{got:?}");
    }

    #[test]
    fn a_foreign_header_is_refused_and_the_file_left_unchanged() {
        let tmp = TempDir::new("header");
        for (field, index) in [
            (HeaderField::Magic, MAGIC),
            (HeaderField::Version, VERSION),
            (HeaderField::Layout, LAYOUT),
        ] {
            let (region, init) = fresh(&tmp.0, BOOT_A);
            init.ready(&region);
            region.header()[index].store(0xbad, Ordering::Relaxed);
            region.table()[0].store(42, Ordering::Relaxed);
            let path = region.path().to_owned();
            drop(region);
            let before = std::fs::read(&path).unwrap();
            match open_a(&tmp.0, BOOT_A) {
                Err(Refusal::Header {
                    field: f, found, ..
                }) => assert_eq!((f, found), (field, 0xbad)),
                got => panic!("{field}: {got:?}"),
            }
            assert_eq!(std::fs::read(&path).unwrap(), before, "left unchanged");
            // Not ready and not ours either: still not overwritten.
            {
                let f = File::options().read(true).write(true).open(&path).unwrap();
                let map = Mapping::new(&f, before.len()).unwrap();
                map.words()[STATE].store(0, Ordering::Release);
            }
            let not_ready = std::fs::read(&path).unwrap();
            match open_a(&tmp.0, BOOT_B) {
                Err(Refusal::Header { field: f, .. }) => assert_eq!(f, field),
                got => panic!("{field}, not ready: {got:?}"),
            }
            assert_eq!(std::fs::read(&path).unwrap(), not_ready, "left unchanged");
            assert!(!sys::byte_is_locked(&File::open(&path).unwrap(), INIT_LOCK).unwrap());
            std::fs::remove_file(&path).unwrap();
        }
        // A ready table of another layout, under this layout's name (and size).
        let (region, init) = fresh(&tmp.0, BOOT_A);
        init.ready(&region);
        drop(region);
        let got = open(&tmp.0, NAME, tmp.uid(), WORDS, LAYOUT_HASH ^ 1, BOOT_A);
        assert!(
            matches!(
                got,
                Err(Refusal::Header {
                    field: HeaderField::Layout,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn a_file_left_not_ready_is_initialised_again() {
        let tmp = TempDir::new("not-ready");
        let (region, init) = fresh(&tmp.0, BOOT_A);
        drop(init);
        // The lock is free again while the region is still open.
        assert!(!sys::byte_is_locked(&File::open(region.path()).unwrap(), INIT_LOCK).unwrap());
        let (again, init) = fresh(&tmp.0, BOOT_A);
        init.ready(&again);
        drop((region, again));
        joined(&tmp.0, BOOT_A);
    }

    #[test]
    fn a_changed_boot_id_means_a_reboot_and_a_fresh_table() {
        let tmp = TempDir::new("reboot");
        let (region, init) = fresh(&tmp.0, BOOT_A);
        init.ready(&region);
        for word in [DIRTY, WAKE].into_iter().chain(ALLOC) {
            region.header()[word].store(0xfeed, Ordering::Relaxed);
        }
        region.table()[1].store(9, Ordering::Relaxed);
        drop(region);
        let (region, init) = fresh(&tmp.0, BOOT_B);
        let header = region.header();
        assert_eq!(header[STATE].load(Ordering::Acquire), 0);
        for word in [DIRTY, WAKE].into_iter().chain(ALLOC) {
            assert_eq!(header[word].load(Ordering::Relaxed), 0, "word {word}");
        }
        assert_eq!(
            region.table()[1].load(Ordering::Relaxed),
            9,
            "the table is the caller's to reset"
        );
        region.table()[1].store(0, Ordering::Relaxed);
        init.ready(&region);
        let [low, high] = boot_words(BOOT_B);
        assert_eq!(region.header()[BOOT_ID].load(Ordering::Relaxed), low);
        assert_eq!(region.header()[BOOT_ID + 1].load(Ordering::Relaxed), high);
        joined(&tmp.0, BOOT_B);
    }

    #[test]
    fn an_init_lock_held_elsewhere_is_busy() {
        let tmp = TempDir::new("busy");
        let (region, init) = fresh(&tmp.0, BOOT_A);
        // Another open file description conflicts, even in this process.
        let got = open_a(&tmp.0, BOOT_A);
        assert!(matches!(got, Err(Refusal::Busy { .. })), "{got:?}");
        init.ready(&region);
        joined(&tmp.0, BOOT_A);
    }

    #[test]
    fn refusals_name_the_path_and_the_reason() {
        let dir = Refusal::Directory {
            path: PathBuf::from("/run/user/0/imds-cache"),
            problem: DirectoryProblem::Mode { found: 0o777 },
        };
        assert_eq!(
            dir.to_string(),
            "/run/user/0/imds-cache: mode 0777, must be 0700 (group and others have access)"
        );
        let file = Refusal::Mode {
            path: PathBuf::from("/d/t"),
            found: 0o640,
        };
        assert_eq!(
            file.to_string(),
            "/d/t: mode 0640, must be 0600 (the group has access)"
        );
        let links = Refusal::Links {
            path: PathBuf::from("/d/t"),
            found: 2,
        };
        assert!(links.to_string().starts_with("/d/t: 2 hard links"));
        let io = Refusal::Io {
            path: PathBuf::from("/d/t"),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(io.to_string().starts_with("/d/t: "));
        assert!(std::error::Error::source(&io).is_some());
    }

    /// Kills and reaps the child even when the test fails.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_child_killed_while_initialising_leaves_the_file_fresh() {
        if let Some(dir) = std::env::var_os(CHILD_VAR) {
            // The child: initialise, say so, and hang until killed (bounded all the same).
            let (_region, _init) = fresh(Path::new(&dir), BOOT_A);
            println!("initialising");
            io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let tmp = TempDir::new("killed");
        let test = format!(
            "{}::a_child_killed_while_initialising_leaves_the_file_fresh",
            module_path!().split_once("::").unwrap().1
        );
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, &tmp.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // The harness may print "test <name> ... " on the same line first.
        let started = lines.any(|line| line.is_ok_and(|l| l.ends_with("initialising")));
        assert!(started, "the child ended without initialising");
        assert!(
            sys::byte_is_locked(&File::open(tmp.0.join(NAME)).unwrap(), INIT_LOCK).unwrap(),
            "the child holds the init lock"
        );
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));

        let (region, init) = fresh(&tmp.0, BOOT_A);
        init.ready(&region);
        joined(&tmp.0, BOOT_A);
    }
}
