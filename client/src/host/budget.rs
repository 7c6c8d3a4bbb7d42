//! The request budget ("gate") of an endpoint shared by every client of a process, or by every
//! process of the user on the host (D18), so that many processes together stay under the
//! endpoint's throttling (starts per sliding window, requests in flight).
//!
//! # The file `budget-v1` (frozen: every version of the library maps the same bytes)
//!
//! All words are little-endian `u64`s, only ever accessed as atomics.
//!
//! - Header page, bytes `0..4096`: word 0 [`MAGIC`] (`"IMDSBUD1"` read little-endian), word 1
//!   the format version (1), word 2 the state (1 = ready, written last with Release), the
//!   rest zero.
//! - 256 endpoint records of 136 words (1088 bytes) each, record `r` at byte
//!   `4096 + r * 1088`; the file is 282 624 bytes (69 pages). Words of a record:
//!   - 0: endpoint id: FNV-1a 64 of the endpoint URL's bytes (1 if that is 0); 0 = free, claimed
//!     by CAS from 0 and never freed (a record is a few hundred bytes; endpoints are few);
//!   - 1: `blocked_until_ms`: no start before it (Retry-After, the 410 window), raised with
//!     `fetch_max`;
//!   - 2: `released`: bumped (and futex-woken) on every permit release and every start;
//!   - 3..8: zero, unused;
//!   - 8..136: the ring of 128 start times (ms since the Unix epoch; 0 = empty). A start
//!     replaces the oldest entry by CAS, and only one that has left the window plus the margin:
//!     a start is never forgotten while it counts, and a crash over-counts for one window only.
//! - Locks (open-file-description write locks on single bytes, freed by the kernel when the
//!   holder dies): byte 0 is the initialisation lock; byte `282624 + r * 32 + p` (past the
//!   end of the file) is permit `p` of record `r`, 32 per record.
//!
//! A fresh (empty) file is grown to full size and its header written under the initialisation
//! lock; so is a full-size file whose state is not ready (its initialiser died). A ready file
//! with another magic or version is refused: the caller falls back to the process gate.
//!
//! A configuration's own `rate` and `in_flight` are the limits each process applies to the
//! shared ring and permits, so every valid configuration fits (128 = `MAX_RATE`, 32 =
//! `MAX_IN_FLIGHT`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imds_cache::{Config, MAX_IN_FLIGHT, MAX_RATE};
use parking_lot::Mutex;

use super::sys::{self, Mapping};

/// The file's name in the host directory; a new format gets a new name.
pub(crate) const FILE_NAME: &str = "budget-v1";
/// Word 0 of the header.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"IMDSBUD1");
/// Word 1 of the header.
const VERSION: u64 = 1;
/// Word 2 of the header once the file may be used.
const READY: u64 = 1;
const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_STATE: usize = 2;
/// The header is one page.
const HEADER_WORDS: usize = 4096 / 8;
/// Endpoint records: more than a host has endpoints, since claims are never given back.
const RECORDS: usize = 256;
/// Ring entries per record: the frozen size, not core's constant (which could change).
const RING: usize = 128;
/// Permit bytes per record, likewise frozen.
const PERMITS: usize = 32;
const R_ID: usize = 0;
const R_BLOCKED: usize = 1;
const R_RELEASED: usize = 2;
const R_RING: usize = 8;
const RECORD_WORDS: usize = R_RING + RING;
/// The file's exact size.
pub(crate) const FILE_LEN: u64 = ((HEADER_WORDS + RECORDS * RECORD_WORDS) * 8) as u64;
/// The lock byte that serialises initialisation.
const INIT_LOCK_BYTE: u64 = 0;
/// How long opening waits for another process's initialisation.
const INIT_WAIT: Duration = Duration::from_secs(1);
/// A refused start for want of a permit is retried this soon (and on every release).
const IN_FLIGHT_RETRY_MS: u64 = 50;
/// Longest sleep in [`Gate::wait`]: a killed holder's permit is freed by the kernel, which
/// wakes nobody, so waiters must look again on their own.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Scans of the ring before a start contended by others gives up for now.
const CAS_ATTEMPTS: usize = 2 * RING;

const _: () = assert!(MAX_RATE as usize <= RING && MAX_IN_FLIGHT as usize <= PERMITS);
const _: () = assert!(PERMITS <= 32, "the in-process permit mask is a u32");
const _: () = assert!(FILE_LEN % 4096 == 0);

/// The lock byte of permit `p` of record `record`.
const fn permit_byte(record: usize, p: u32) -> u64 {
    FILE_LEN + (record * PERMITS) as u64 + p as u64
}

/// An endpoint's id in the file (FNV-1a 64, frozen; never 0, which marks a free record).
pub(crate) fn endpoint_id(endpoint: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in endpoint.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// Why the budget file cannot be used (the caller then uses the process gate).
#[derive(Debug)]
pub(crate) struct BudgetFileError {
    pub(crate) path: PathBuf,
    pub(crate) kind: BudgetFileErrorKind,
}

/// What is wrong with the budget file.
#[derive(Debug)]
pub(crate) enum BudgetFileErrorKind {
    Io(io::Error),
    /// A symbolic link is at the path (never followed).
    Symlink,
    /// Not a regular file.
    NotRegular,
    Owner {
        found: u32,
        expected: u32,
    },
    /// Permission bits other than 0600.
    Mode {
        found: u32,
    },
    /// More than one name: someone could reach it from elsewhere.
    Links {
        found: u64,
    },
    Size {
        found: u64,
        expected: u64,
    },
    /// Ready, but not this format.
    Magic {
        found: u64,
    },
    Version {
        found: u64,
    },
    /// Another process held the initialisation lock too long.
    InitLock,
    /// Every record belongs to another endpoint.
    Full,
}

impl fmt::Display for BudgetFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "budget file {}: ", self.path.display())?;
        match &self.kind {
            BudgetFileErrorKind::Io(e) => write!(f, "{e}"),
            BudgetFileErrorKind::Symlink => f.write_str("is a symbolic link"),
            BudgetFileErrorKind::NotRegular => f.write_str("is not a regular file"),
            BudgetFileErrorKind::Owner { found, expected } => {
                write!(f, "owned by uid {found}, not {expected}")
            }
            BudgetFileErrorKind::Mode { found } => write!(f, "mode {found:o}, not 600"),
            BudgetFileErrorKind::Links { found } => write!(f, "has {found} links, not 1"),
            BudgetFileErrorKind::Size { found, expected } => {
                write!(f, "{found} bytes, not 0 or {expected}")
            }
            BudgetFileErrorKind::Magic { found } => write!(f, "unknown magic {found:#018x}"),
            BudgetFileErrorKind::Version { found } => write!(f, "unknown version {found}"),
            BudgetFileErrorKind::InitLock => {
                f.write_str("another process is still initialising it")
            }
            BudgetFileErrorKind::Full => f.write_str("every endpoint record is taken"),
        }
    }
}

impl std::error::Error for BudgetFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            BudgetFileErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// One open file description of the budget file, mapped.
struct BudgetFile {
    file: File,
    map: Mapping,
    /// Per record, the permits this description's holders have taken: its own locks never
    /// conflict with each other, so without this two threads could take the same byte.
    held: [AtomicU32; RECORDS],
}

/// The budget file of one directory, opened by [`open_host`]: one open file description
/// (as a process has), its gates one per endpoint.
pub(crate) struct HostBudgets {
    path: PathBuf,
    file: Arc<BudgetFile>,
    gates: Mutex<Vec<(String, Arc<Gate>)>>,
}

/// Checks what `file` is and returns its size.
fn check_file(file: &File, uid: u32) -> Result<u64, BudgetFileErrorKind> {
    let meta = file.metadata().map_err(BudgetFileErrorKind::Io)?;
    if !meta.file_type().is_file() {
        return Err(BudgetFileErrorKind::NotRegular);
    }
    if meta.uid() != uid {
        return Err(BudgetFileErrorKind::Owner {
            found: meta.uid(),
            expected: uid,
        });
    }
    if meta.nlink() != 1 {
        return Err(BudgetFileErrorKind::Links {
            found: meta.nlink(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 {
        return Err(BudgetFileErrorKind::Mode { found: mode });
    }
    if meta.len() != 0 && meta.len() != FILE_LEN {
        return Err(BudgetFileErrorKind::Size {
            found: meta.len(),
            expected: FILE_LEN,
        });
    }
    Ok(meta.len())
}

/// Whether the header says ready; a ready header of another format is an error.
fn header_ready(words: &[AtomicU64]) -> Result<bool, BudgetFileErrorKind> {
    if words[W_STATE].load(Ordering::Acquire) != READY {
        return Ok(false);
    }
    let magic = words[W_MAGIC].load(Ordering::Relaxed);
    if magic != MAGIC {
        return Err(BudgetFileErrorKind::Magic { found: magic });
    }
    let version = words[W_VERSION].load(Ordering::Relaxed);
    if version != VERSION {
        return Err(BudgetFileErrorKind::Version { found: version });
    }
    Ok(true)
}

/// The initialisation lock, released on drop.
struct InitLock<'f>(&'f File);

impl<'f> InitLock<'f> {
    /// Waits a bounded time for the lock: an initialiser takes microseconds.
    fn take(file: &'f File) -> Result<Self, BudgetFileErrorKind> {
        let deadline = Instant::now() + INIT_WAIT;
        loop {
            if sys::try_lock_byte(file, INIT_LOCK_BYTE).map_err(BudgetFileErrorKind::Io)? {
                return Ok(Self(file));
            }
            if Instant::now() >= deadline {
                return Err(BudgetFileErrorKind::InitLock);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for InitLock<'_> {
    fn drop(&mut self) {
        let _ = sys::unlock_byte(self.0, INIT_LOCK_BYTE);
    }
}

/// Opens (creating and initialising if need be) `dir/budget-v1`. `dir` is the caller's
/// checked directory (0700, owned by `uid`, the effective uid); the file must be a regular
/// file of `uid` with mode 0600, one link, and size 0 or [`FILE_LEN`].
pub(crate) fn open_host(dir: &Path, uid: u32) -> Result<HostBudgets, BudgetFileError> {
    let path = dir.join(FILE_NAME);
    let fail = |kind| BudgetFileError {
        path: path.clone(),
        kind,
    };
    // O_NOFOLLOW: never a link's target; O_NONBLOCK: a FIFO put there cannot block the open.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| {
            fail(match e.raw_os_error() {
                Some(libc::ELOOP) => BudgetFileErrorKind::Symlink,
                Some(libc::EISDIR) => BudgetFileErrorKind::NotRegular,
                _ => BudgetFileErrorKind::Io(e),
            })
        })?;
    let map = open_mapping(&file, uid).map_err(fail)?;
    Ok(HostBudgets {
        file: Arc::new(BudgetFile {
            file,
            map,
            held: std::array::from_fn(|_| AtomicU32::new(0)),
        }),
        path,
        gates: Mutex::new(Vec::new()),
    })
}

/// Checks the file, initialises it if it is not ready, and maps it.
fn open_mapping(file: &File, uid: u32) -> Result<Mapping, BudgetFileErrorKind> {
    let map_all = || Mapping::new(file, FILE_LEN as usize).map_err(BudgetFileErrorKind::Io);
    if check_file(file, uid)? == FILE_LEN {
        let map = map_all()?;
        if header_ready(map.words())? {
            return Ok(map);
        }
    }
    let _lock = InitLock::take(file)?;
    // Again under the lock: another process may have grown or initialised it meanwhile.
    if check_file(file, uid)? == 0 {
        // Only ever grows an empty file: a file of another size was refused above.
        file.set_len(FILE_LEN).map_err(BudgetFileErrorKind::Io)?;
    }
    let map = map_all()?;
    if !header_ready(map.words())? {
        // Nobody uses a file that is not ready, so whatever a dead initialiser left goes.
        let words = map.words();
        for w in &words[W_STATE + 1..] {
            if w.load(Ordering::Relaxed) != 0 {
                w.store(0, Ordering::Relaxed);
            }
        }
        words[W_MAGIC].store(MAGIC, Ordering::Relaxed);
        words[W_VERSION].store(VERSION, Ordering::Relaxed);
        words[W_STATE].store(READY, Ordering::Release);
    }
    Ok(map)
}

impl HostBudgets {
    /// The gate of `endpoint`, the same one on every call; `Full` when every record belongs
    /// to other endpoints.
    pub(crate) fn gate(&self, endpoint: &str) -> Result<Arc<Gate>, BudgetFileError> {
        let mut gates = self.gates.lock();
        if let Some((_, gate)) = gates.iter().find(|(e, _)| e == endpoint) {
            return Ok(Arc::clone(gate));
        }
        let record = self.claim(endpoint_id(endpoint)).ok_or(BudgetFileError {
            path: self.path.clone(),
            kind: BudgetFileErrorKind::Full,
        })?;
        let gate = Arc::new(Gate {
            backing: Backing::Host {
                file: Arc::clone(&self.file),
                record,
            },
        });
        gates.push((endpoint.to_owned(), Arc::clone(&gate)));
        Ok(gate)
    }

    /// The record of `id`: the first one holding it, or the first free one, claimed. Claims
    /// are never undone, so no record holding `id` lies past a free one.
    fn claim(&self, id: u64) -> Option<usize> {
        let words = self.file.map.words();
        (0..RECORDS).find(|&r| {
            let word = &words[HEADER_WORDS + r * RECORD_WORDS + R_ID];
            match word.compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => true,
                Err(found) => found == id,
            }
        })
    }
}

/// An endpoint's request budget: starts in a sliding window, permits in flight, and a time
/// before which nothing starts.
pub(crate) struct Gate {
    backing: Backing,
}

enum Backing {
    /// This process only.
    Process(Box<ProcessWords>),
    /// A record of the budget file.
    Host {
        file: Arc<BudgetFile>,
        record: usize,
    },
}

struct ProcessWords {
    blocked_until: AtomicU64,
    released: AtomicU64,
    ring: [AtomicU64; RING],
    held: AtomicU32,
}

/// The words of a gate, wherever they live.
struct Words<'a> {
    blocked_until: &'a AtomicU64,
    released: &'a AtomicU64,
    ring: &'a [AtomicU64],
    held: &'a AtomicU32,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backing {
            Backing::Process(_) => f.write_str("Gate(process)"),
            Backing::Host { record, .. } => write!(f, "Gate(host record {record})"),
        }
    }
}

impl Gate {
    /// A gate in this process's memory, shared by no one else.
    fn new_process() -> Self {
        Self {
            backing: Backing::Process(Box::new(ProcessWords {
                blocked_until: AtomicU64::new(0),
                released: AtomicU64::new(0),
                ring: std::array::from_fn(|_| AtomicU64::new(0)),
                held: AtomicU32::new(0),
            })),
        }
    }

    fn words(&self) -> Words<'_> {
        match &self.backing {
            Backing::Process(p) => Words {
                blocked_until: &p.blocked_until,
                released: &p.released,
                ring: &p.ring,
                held: &p.held,
            },
            Backing::Host { file, record } => {
                let base = HEADER_WORDS + record * RECORD_WORDS;
                let words = &file.map.words()[base..base + RECORD_WORDS];
                Words {
                    blocked_until: &words[R_BLOCKED],
                    released: &words[R_RELEASED],
                    ring: &words[R_RING..],
                    held: &file.held[*record],
                }
            }
        }
    }

    /// Starts a request now if the budget allows, as core's `Budget::check` would decide:
    /// `Err(retry_at_ms)` while blocked (its end), while `config.in_flight` permits are held
    /// (soon: also wait for [`released`](Self::released) to change), or while `config.rate`
    /// starts lie within the window plus the margin (when enough of them have left it).
    pub(crate) fn try_start(self: &Arc<Self>, config: &Config, now_ms: u64) -> Result<Permit, u64> {
        let words = self.words();
        let blocked = words.blocked_until.load(Ordering::Acquire);
        if now_ms < blocked {
            return Err(blocked);
        }
        let limit = config.in_flight.clamp(1, MAX_IN_FLIGHT);
        let slot = self
            .take_permit(limit)
            .ok_or(now_ms.saturating_add(IN_FLIGHT_RETRY_MS))?;
        // Dropped (so given back) if the rate refuses.
        let permit = Permit {
            gate: Arc::clone(self),
            slot,
        };
        record_start(words.ring, config, now_ms)?;
        bump(words.released);
        Ok(permit)
    }

    /// A free permit below `limit`, taken.
    fn take_permit(&self, limit: u32) -> Option<u32> {
        let held = self.words().held;
        (0..limit).find(|&p| {
            let bit = 1u32 << p;
            if held.fetch_or(bit, Ordering::Acquire) & bit != 0 {
                return false; // another thread of this process has it
            }
            let Backing::Host { file, record } = &self.backing else {
                return true;
            };
            // An error counts as held: never more requests than allowed.
            if sys::try_lock_byte(&file.file, permit_byte(*record, p)).unwrap_or(false) {
                return true;
            }
            held.fetch_and(!bit, Ordering::Release);
            false
        })
    }

    /// No start before `until_ms` (a Retry-After or 410 window seen by one holds back all).
    pub(crate) fn block_until(&self, until_ms: u64) {
        self.words()
            .blocked_until
            .fetch_max(until_ms, Ordering::AcqRel);
    }

    /// The counter that changes on every release and start, for [`wait`](Self::wait).
    pub(crate) fn released(&self) -> u64 {
        self.words().released.load(Ordering::Acquire)
    }

    /// Sleeps until [`released`](Self::released) differs from `seen`, at most `timeout` and
    /// never more than 100 ms (a dead holder's permit is freed without a wake-up). May return
    /// early: callers look again.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        sys::wait(self.words().released, seen, timeout.min(MAX_WAIT));
    }

    /// Permits held now, by this process and (host gates) by others.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u32 {
        let held = self.words().held.load(Ordering::Acquire);
        match &self.backing {
            Backing::Process(_) => held.count_ones(),
            Backing::Host { file, record } => (0..PERMITS as u32)
                .filter(|&p| {
                    held & (1 << p) != 0
                        || sys::byte_is_locked(&file.file, permit_byte(*record, p)).unwrap_or(true)
                })
                .count() as u32,
        }
    }
}

/// Wakes whoever waits for a permit or for the ring to move.
fn bump(released: &AtomicU64) {
    released.fetch_add(1, Ordering::Release);
    sys::wake_all(released);
}

/// Records a start at `now_ms` if fewer than `config.rate` starts lie within the window plus
/// the margin (core's `Budget::check_rate`), by CAS on the oldest entry that has left it.
fn record_start(ring: &[AtomicU64], config: &Config, now_ms: u64) -> Result<(), u64> {
    let rate = config.rate.clamp(1, MAX_RATE) as usize;
    let span = config.rate_window_ms.saturating_add(config.rate_margin_ms);
    // 0 marks an empty entry.
    let stamp = now_ms.max(1);
    for _ in 0..CAS_ATTEMPTS {
        let mut live = [0u64; RING];
        let mut n = 0;
        let mut oldest: Option<(usize, u64)> = None;
        for (i, word) in ring.iter().enumerate() {
            let at = word.load(Ordering::Acquire);
            if at != 0 && at.saturating_add(span) > now_ms {
                live[n] = at;
                n += 1;
            } else if !matches!(oldest, Some((_, o)) if o <= at) {
                oldest = Some((i, at));
            }
        }
        if n >= rate {
            // One more start fits once `n - rate + 1` of the live starts have left.
            let live = &mut live[..n];
            live.sort_unstable();
            return Err(live[n - rate].saturating_add(span));
        }
        // n < rate <= RING, so some entry has left the window.
        let Some((i, at)) = oldest else {
            return Err(now_ms.saturating_add(1));
        };
        if ring[i]
            .compare_exchange(at, stamp, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Ok(());
        }
        // Another start took it: look again.
    }
    Err(now_ms.saturating_add(1))
}

/// A request in flight; dropping it frees its permit and wakes the waiters.
pub(crate) struct Permit {
    gate: Arc<Gate>,
    slot: u32,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permit({:?}, {})", self.gate, self.slot)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let words = self.gate.words();
        if let Backing::Host { file, record } = &self.gate.backing {
            // Before the bit is cleared, else another thread could take the byte (its own
            // description's lock) and lose it to this unlock. An error is ignored: the kernel
            // frees the lock when the process ends.
            let _ = sys::unlock_byte(&file.file, permit_byte(*record, self.slot));
        }
        words
            .held
            .fetch_and(!(1u32 << self.slot), Ordering::Release);
        bump(words.released);
    }
}

/// The process's gates, one per endpoint (endpoints are few: kept for the process's life),
/// each with the process that made it: a forked child makes its own, since its parent's
/// permits (held by threads the child does not have) would never be given back there.
static PROCESS_GATES: Mutex<Vec<(String, u32, Arc<Gate>)>> = Mutex::new(Vec::new());

/// The host budget files this process opened, one description per directory, with the
/// process that opened it: a forked child opens its own, so that its locks and its parent's
/// are two descriptions' (the inherited one is closed without unlocking anything).
static HOST_FILES: Mutex<Vec<(PathBuf, u32, Arc<HostBudgets>)>> = Mutex::new(Vec::new());

/// The gate every client of this process uses for `endpoint` (private mode).
pub(crate) fn process_gate(endpoint: &str) -> Arc<Gate> {
    let pid = std::process::id();
    let mut gates = PROCESS_GATES.lock();
    gates.retain(|(_, p, _)| *p == pid);
    if let Some((_, _, gate)) = gates.iter().find(|(e, _, _)| e == endpoint) {
        return Arc::clone(gate);
    }
    let gate = Arc::new(Gate::new_process());
    gates.push((endpoint.to_owned(), pid, Arc::clone(&gate)));
    gate
}

/// The gate every process of the user shares for `endpoint` (host mode), through the budget
/// file in `dir` (checked by the caller, owned by `uid`); one per directory and endpoint in
/// this process. An error means: use [`process_gate`] (with a warning).
pub(crate) fn host_gate(
    dir: &Path,
    uid: u32,
    endpoint: &str,
) -> Result<Arc<Gate>, BudgetFileError> {
    let pid = std::process::id();
    let budgets = {
        let mut files = HOST_FILES.lock();
        files.retain(|(_, p, _)| *p == pid);
        match files.iter().find(|(d, _, _)| d == dir) {
            Some((_, _, budgets)) => Arc::clone(budgets),
            None => {
                let budgets = Arc::new(open_host(dir, uid)?);
                files.push((dir.to_path_buf(), pid, Arc::clone(&budgets)));
                budgets
            }
        }
    };
    budgets.gate(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::fs::DirBuilderExt;
    use std::process::{Child, Command, Stdio};

    /// A fresh 0700 directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("imds-budget-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .unwrap();
            Self(path)
        }

        fn uid(&self) -> u32 {
            std::fs::metadata(&self.0).unwrap().uid()
        }

        fn file(&self) -> PathBuf {
            self.0.join(FILE_NAME)
        }

        fn open(&self) -> Result<HostBudgets, BudgetFileError> {
            open_host(&self.0, self.uid())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const T: u64 = 1_700_000_000_000;
    const EP: &str = "http://127.0.0.1:1/metadata/identity/oauth2/token";

    fn config(rate: u32, in_flight: u32) -> Config {
        Config {
            rate,
            in_flight,
            ..Config::DEFAULT
        }
    }

    /// A process gate and a host gate, for tests both must pass alike.
    fn both(dir: &TempDir) -> Vec<Arc<Gate>> {
        vec![
            Arc::new(Gate::new_process()),
            dir.open().unwrap().gate(EP).unwrap(),
        ]
    }

    fn kind(r: Result<HostBudgets, BudgetFileError>) -> BudgetFileErrorKind {
        match r {
            Ok(_) => panic!("opened"),
            Err(e) => {
                assert!(e.to_string().contains(FILE_NAME), "{e}");
                e.kind
            }
        }
    }

    #[test]
    fn the_format_is_frozen() {
        assert_eq!(FILE_LEN, 282_624);
        assert_eq!(RECORD_WORDS, 136);
        assert_eq!(permit_byte(0, 0), 282_624);
        assert_eq!(permit_byte(3, 5), 282_624 + 3 * 32 + 5);
        assert_eq!(MAGIC.to_le_bytes(), *b"IMDSBUD1");
        // FNV-1a 64 test vectors.
        assert_eq!(endpoint_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(endpoint_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(endpoint_id("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn a_fresh_file_is_initialised() {
        let dir = TempDir::new("fresh");
        let budgets = dir.open().unwrap();
        let meta = std::fs::metadata(dir.file()).unwrap();
        assert_eq!(meta.len(), FILE_LEN);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let words = budgets.file.map.words();
        assert_eq!(words[W_MAGIC].load(Ordering::Relaxed), MAGIC);
        assert_eq!(words[W_VERSION].load(Ordering::Relaxed), VERSION);
        assert_eq!(words[W_STATE].load(Ordering::Relaxed), READY);
        // Opening again keeps what is there.
        budgets.gate(EP).unwrap().block_until(T);
        let again = dir.open().unwrap();
        assert_eq!(
            again.file.map.words()[HEADER_WORDS + R_BLOCKED].load(Ordering::Relaxed),
            T
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn the_rate_counts_starts_in_the_window_plus_margin() {
        let dir = TempDir::new("rate");
        let c = config(20, 5);
        for gate in both(&dir) {
            for _ in 0..20 {
                drop(gate.try_start(&c, T).unwrap());
            }
            // The first of the 20 leaves after the window (1000) plus the margin (50).
            assert_eq!(gate.try_start(&c, T).unwrap_err(), T + 1050);
            assert_eq!(gate.try_start(&c, T + 1049).unwrap_err(), T + 1050);
            assert_eq!(gate.in_flight(), 0, "a refused start gives its permit back");
            drop(gate.try_start(&c, T + 1050).unwrap());
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn retry_at_is_when_enough_starts_have_left() {
        let dir = TempDir::new("stagger");
        for gate in both(&dir) {
            let c = config(4, 5);
            for i in 0..4 {
                drop(gate.try_start(&c, T + i * 100).unwrap());
            }
            // Live starts at T, T+100, T+200, T+300: the first must leave.
            assert_eq!(gate.try_start(&c, T + 300).unwrap_err(), T + 1050);
            // A stricter configuration over the same ring needs more to leave.
            let strict = config(2, 5);
            assert_eq!(
                gate.try_start(&strict, T + 300).unwrap_err(),
                T + 200 + 1050
            );
            // A looser one may start at once.
            drop(gate.try_start(&config(5, 5), T + 300).unwrap());
            // A start from a clock ahead of ours still counts.
            let c = config(6, 5);
            drop(gate.try_start(&c, T + 5000).unwrap());
            assert_eq!(gate.try_start(&c, T + 400).unwrap_err(), T + 1050);
            assert_eq!(gate.try_start(&c, T + 2000).map(drop), Ok(()));
            assert_eq!(
                gate.try_start(&config(1, 5), T + 2000).unwrap_err(),
                T + 6050
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn in_flight_is_capped_until_a_permit_drops() {
        let dir = TempDir::new("inflight");
        let c = config(128, 5);
        for gate in both(&dir) {
            let mut held: Vec<Permit> = (0..5).map(|_| gate.try_start(&c, T).unwrap()).collect();
            assert_eq!(gate.in_flight(), 5);
            assert_eq!(gate.try_start(&c, T).unwrap_err(), T + IN_FLIGHT_RETRY_MS);
            let seen = gate.released();
            held.pop();
            assert_ne!(gate.released(), seen, "a release moves the counter");
            assert_eq!(gate.in_flight(), 4);
            held.push(gate.try_start(&c, T).unwrap());
            assert!(gate.try_start(&c, T).is_err());
            drop(held);
            assert_eq!(gate.in_flight(), 0);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn threads_of_one_process_never_share_a_permit() {
        let dir = TempDir::new("threads");
        let c = config(128, 5);
        for gate in both(&dir) {
            let barrier = std::sync::Barrier::new(8);
            let permits: Vec<Option<Permit>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            gate.try_start(&c, T).ok()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut slots: Vec<u32> = permits.iter().flatten().map(|p| p.slot).collect();
            slots.sort_unstable();
            assert_eq!(slots, [0, 1, 2, 3, 4]);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn blocked_until_holds_back_and_only_grows() {
        let dir = TempDir::new("blocked");
        let c = Config::DEFAULT;
        for gate in both(&dir) {
            gate.block_until(T + 5000);
            gate.block_until(T + 1000);
            assert_eq!(gate.try_start(&c, T).unwrap_err(), T + 5000);
            assert_eq!(gate.try_start(&c, T + 4999).unwrap_err(), T + 5000);
            drop(gate.try_start(&c, T + 5000).unwrap());
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn two_descriptions_share_ring_permits_and_blocked_until() {
        let dir = TempDir::new("share");
        let (one, two) = (dir.open().unwrap(), dir.open().unwrap());
        let (a, b) = (one.gate(EP).unwrap(), two.gate(EP).unwrap());
        let c = config(3, 2);
        // Permits: two held through `a` leave none for `b`.
        let p1 = a.try_start(&c, T).unwrap();
        let p2 = a.try_start(&c, T).unwrap();
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.try_start(&c, T).unwrap_err(), T + IN_FLIGHT_RETRY_MS);
        let seen = b.released();
        drop(p1);
        assert_ne!(
            b.released(),
            seen,
            "a release through one is seen through the other"
        );
        // Ring: `a` made two starts, so `b` gets the third and then none.
        drop(b.try_start(&c, T + 10).unwrap());
        assert_eq!(b.in_flight(), 1);
        drop(p2);
        assert_eq!(a.try_start(&c, T + 20).unwrap_err(), T + 1050);
        // blocked_until.
        b.block_until(T + 9000);
        assert_eq!(a.try_start(&c, T + 2000).unwrap_err(), T + 9000);
        // Another endpoint has a record of its own.
        let other = two.gate("http://127.0.0.1:2/").unwrap();
        assert!(other.try_start(&c, T + 2000).is_ok());
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn registries_return_one_gate_per_endpoint() {
        let a = process_gate("http://registry.test/a");
        assert!(Arc::ptr_eq(&a, &process_gate("http://registry.test/a")));
        assert!(!Arc::ptr_eq(&a, &process_gate("http://registry.test/b")));

        let dir = TempDir::new("registry");
        let uid = dir.uid();
        let h = host_gate(&dir.0, uid, EP).unwrap();
        assert!(Arc::ptr_eq(&h, &host_gate(&dir.0, uid, EP).unwrap()));
        let other = host_gate(&dir.0, uid, "http://127.0.0.1:2/").unwrap();
        assert!(!Arc::ptr_eq(&h, &other));
        match (&h.backing, &other.backing) {
            (
                Backing::Host {
                    file: f1,
                    record: r1,
                },
                Backing::Host {
                    file: f2,
                    record: r2,
                },
            ) => {
                assert!(Arc::ptr_eq(f1, f2), "one description per directory");
                assert_ne!(r1, r2);
            }
            _ => panic!("host gates"),
        }
        // A private gate of the same endpoint shares nothing with the host's.
        let _held = h.try_start(&config(128, 1), T).unwrap();
        assert!(process_gate(EP).try_start(&config(128, 1), T).is_ok());
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn records_run_out_and_are_found_again() {
        let dir = TempDir::new("full");
        let budgets = dir.open().unwrap();
        for i in 0..RECORDS {
            budgets.gate(&format!("http://127.0.0.1:{i}/")).unwrap();
        }
        let e = budgets.gate("http://127.0.0.1:99999/").unwrap_err();
        assert!(matches!(e.kind, BudgetFileErrorKind::Full), "{e:?}");
        // Another description finds the claimed records.
        let again = dir.open().unwrap();
        let g = again.gate("http://127.0.0.1:7/").unwrap();
        assert!(matches!(g.backing, Backing::Host { record: 7, .. }));
    }

    #[test]
    #[cfg_attr(miri, ignore = "futex is a system call")]
    fn a_release_wakes_a_waiter() {
        let dir = TempDir::new("wake");
        let c = config(128, 1);
        for gate in both(&dir) {
            let held = gate.try_start(&c, T).unwrap();
            let seen = gate.released();
            std::thread::scope(|s| {
                let waiter = s.spawn(|| {
                    // Bounded: at most 600 waits of at most 100 ms.
                    for _ in 0..600 {
                        if gate.released() != seen {
                            return gate.try_start(&c, T).is_ok();
                        }
                        gate.wait(seen, Duration::from_secs(1));
                    }
                    false
                });
                drop(held);
                assert!(waiter.join().unwrap());
            });
        }
    }

    const CHILD_DIR: &str = "IMDS_BUDGET_TEST_CHILD_DIR";

    /// The child of `a_killed_holders_permit_is_freed`; does nothing in a normal run.
    #[test]
    fn child_holds_a_permit() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let uid = std::fs::metadata(&dir).unwrap().uid();
        let gate = open_host(&dir, uid).unwrap().gate(EP).unwrap();
        let _permit = gate.try_start(&config(128, 1), T).unwrap();
        eprintln!("held");
        // Bounded: the parent kills it long before.
        std::thread::sleep(Duration::from_secs(30));
    }

    /// Kills and reaps the child however the test ends.
    struct Reap(Child);

    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "runs a process")]
    fn a_killed_holders_permit_is_freed() {
        let dir = TempDir::new("killed");
        let c = config(128, 1);
        let gate = dir.open().unwrap().gate(EP).unwrap();
        let mut child = Reap(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "host::budget::tests::child_holds_a_permit",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, &dir.0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Bounded: the child prints or ends (its sleep is 30 s at most), closing the pipe.
        let stderr = child.0.stderr.take().unwrap();
        let held = std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == "held");
        assert!(held, "the child did not take the permit");
        assert_eq!(gate.in_flight(), 1);
        assert_eq!(gate.try_start(&c, T).unwrap_err(), T + IN_FLIGHT_RETRY_MS);
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        assert_eq!(
            gate.in_flight(),
            0,
            "the kernel freed the dead child's lock"
        );
        drop(gate.try_start(&c, T).unwrap());
    }

    #[test]
    #[cfg_attr(miri, ignore = "opens files")]
    fn hostile_files_are_refused() {
        let dir = TempDir::new("hostile");
        let path = dir.file();
        let sized = |mode: u32, len: u64| {
            let _ = std::fs::remove_file(&path);
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .unwrap();
        };

        std::os::unix::fs::symlink(dir.0.join("elsewhere"), &path).unwrap();
        assert!(matches!(kind(dir.open()), BudgetFileErrorKind::Symlink));
        assert!(
            !dir.0.join("elsewhere").exists(),
            "the link was not followed"
        );
        std::fs::remove_file(&path).unwrap();

        std::fs::create_dir(&path).unwrap();
        assert!(matches!(kind(dir.open()), BudgetFileErrorKind::NotRegular));
        std::fs::remove_dir(&path).unwrap();

        sized(0o644, FILE_LEN);
        assert!(matches!(
            kind(dir.open()),
            BudgetFileErrorKind::Mode { found: 0o644 }
        ));

        sized(0o600, 100);
        assert!(matches!(
            kind(dir.open()),
            BudgetFileErrorKind::Size {
                found: 100,
                expected: FILE_LEN
            }
        ));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            100,
            "never truncated"
        );

        sized(0o600, FILE_LEN);
        let uid = dir.uid();
        assert!(matches!(
            kind(open_host(&dir.0, uid.wrapping_add(1))),
            BudgetFileErrorKind::Owner { .. }
        ));

        let link = dir.0.join("second-name");
        std::fs::hard_link(&path, &link).unwrap();
        assert!(matches!(
            kind(dir.open()),
            BudgetFileErrorKind::Links { found: 2 }
        ));
        std::fs::remove_file(&link).unwrap();

        // Ready, but another format: refused, and left as it is.
        dir.open().unwrap();
        let words = |f: &File| Mapping::new(f, FILE_LEN as usize).unwrap();
        let f = File::options().read(true).write(true).open(&path).unwrap();
        words(&f).words()[W_MAGIC].store(u64::from_le_bytes(*b"IMDSBUD2"), Ordering::Relaxed);
        assert!(matches!(
            kind(dir.open()),
            BudgetFileErrorKind::Magic { .. }
        ));
        words(&f).words()[W_MAGIC].store(MAGIC, Ordering::Relaxed);
        words(&f).words()[W_VERSION].store(2, Ordering::Relaxed);
        assert!(matches!(
            kind(dir.open()),
            BudgetFileErrorKind::Version { found: 2 }
        ));
        assert_eq!(words(&f).words()[W_VERSION].load(Ordering::Relaxed), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps files")]
    fn a_file_left_not_ready_is_initialised_again() {
        let dir = TempDir::new("notready");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.file())
            .unwrap();
        f.set_len(FILE_LEN).unwrap();
        let map = Mapping::new(&f, FILE_LEN as usize).unwrap();
        // A dead initialiser's half header and junk in a record.
        map.words()[W_MAGIC].store(MAGIC, Ordering::Relaxed);
        map.words()[HEADER_WORDS + R_ID].store(42, Ordering::Relaxed);
        map.words()[HEADER_WORDS + R_RING].store(T, Ordering::Relaxed);
        let budgets = dir.open().unwrap();
        assert_eq!(map.words()[W_STATE].load(Ordering::Acquire), READY);
        assert_eq!(map.words()[W_VERSION].load(Ordering::Relaxed), VERSION);
        assert_eq!(map.words()[HEADER_WORDS + R_ID].load(Ordering::Relaxed), 0);
        assert_eq!(
            map.words()[HEADER_WORDS + R_RING].load(Ordering::Relaxed),
            0
        );
        let gate = budgets.gate(EP).unwrap();
        assert!(matches!(gate.backing, Backing::Host { record: 0, .. }));
        drop(gate.try_start(&config(1, 1), T).unwrap());
    }

    #[test]
    #[cfg_attr(miri, ignore = "opens files")]
    fn a_held_init_lock_makes_opening_fail_in_bounded_time() {
        let dir = TempDir::new("initlock");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.file())
            .unwrap();
        assert!(sys::try_lock_byte(&f, INIT_LOCK_BYTE).unwrap());
        assert!(matches!(kind(dir.open()), BudgetFileErrorKind::InitLock));
        sys::unlock_byte(&f, INIT_LOCK_BYTE).unwrap();
        dir.open().unwrap();
    }
}
