//! The only `unsafe` of host sharing: a file mapped shared and viewed as atomic words,
//! byte-range locks on an open file description, and the futex waiters sleep on. Linux only
//! (open-file-description locks and futexes are Linux's).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// A file mapped shared, read and written only as `AtomicU64` words.
pub(crate) struct Mapping {
    map: memmap2::MmapRaw,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` (a multiple of 8, not 0) shared, for reading and
    /// writing. The caller has checked that the file is that long and will never truncate it.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<Self> {
        if len == 0 || len % 8 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mapping is a whole number of 8-byte words",
            ));
        }
        let map = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        Ok(Self { map })
    }

    /// The mapping as words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        let ptr = self.map.as_mut_ptr().cast::<AtomicU64>();
        // SAFETY: the mapping is page-aligned (so 8-aligned), `len` bytes long with `len` a
        // multiple of 8, readable and writable, and stays mapped while `self` (which the slice
        // borrows) lives. `AtomicU64` has the size and alignment of `u64` and no invalid bit
        // patterns, so any file contents are valid words. Every access in this process goes
        // through these atomics, and other processes map the same file only through this
        // type: no non-atomic access races with them. The file is never truncated while
        // mapped (D16), so no page of the slice goes away.
        unsafe { std::slice::from_raw_parts(ptr, self.map.len() / 8) }
    }
}

/// The `struct flock` for one byte, for open-file-description locks (`l_pid` must be 0).
fn one_byte(kind: libc::c_short, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte as libc::off_t;
    lock.l_len = 1;
    lock
}

/// `fcntl` with a lock argument, retried on `EINTR`.
fn fcntl_lock(file: &File, cmd: libc::c_int, lock: &mut libc::flock) -> io::Result<()> {
    loop {
        // SAFETY: `file` is an open descriptor for the call's duration and `lock` a valid,
        // exclusively borrowed `flock` the kernel reads (and, for F_OFD_GETLK, writes).
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, lock as *mut libc::flock) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes a write lock on `byte` of `file` for this open file description, without waiting:
/// `Ok(false)` when another description holds it. The kernel drops it when the last
/// descriptor of this description closes (the holder died).
pub(crate) fn try_lock_byte(file: &File, byte: u64) -> io::Result<bool> {
    let mut lock = one_byte(libc::F_WRLCK as libc::c_short, byte);
    match fcntl_lock(file, libc::F_OFD_SETLK, &mut lock) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases this description's lock on `byte` (a no-op if it holds none).
pub(crate) fn unlock_byte(file: &File, byte: u64) -> io::Result<()> {
    let mut lock = one_byte(libc::F_UNLCK as libc::c_short, byte);
    fcntl_lock(file, libc::F_OFD_SETLK, &mut lock)
}

/// Whether another open file description holds a lock on `byte` (this one's never conflict).
pub(crate) fn byte_is_locked(file: &File, byte: u64) -> io::Result<bool> {
    let mut lock = one_byte(libc::F_WRLCK as libc::c_short, byte);
    fcntl_lock(file, libc::F_OFD_GETLK, &mut lock)?;
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// The 32 bits of `word` a futex compares: its low half, where it lies in memory.
fn futex_address(word: &AtomicU64) -> *const u32 {
    let base = word.as_ptr().cast::<u32>().cast_const();
    if cfg!(target_endian = "little") {
        base
    } else {
        base.wrapping_add(1)
    }
}

/// Sleeps while the low 32 bits of `word` equal those of `seen`, for at most `timeout`; woken
/// by [`wake_all`] from any process that maps the same file. Returns early on a spurious
/// wake-up: callers re-check what they wait for.
pub(crate) fn wait(word: &AtomicU64, seen: u64, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT (shared, not FUTEX_PRIVATE_FLAG: other processes wake it) reads the
    // aligned u32 at `futex_address(word)`, which lies inside `word` and stays valid for the
    // call; `ts` outlives it. The kernel only reads both. Errors (EAGAIN: the value changed;
    // ETIMEDOUT; EINTR) all mean "look again", which the caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_address(word),
            libc::FUTEX_WAIT,
            seen as u32,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every process and thread sleeping in [`wait`] on `word`.
pub(crate) fn wake_all(word: &AtomicU64) {
    // SAFETY: FUTEX_WAKE only uses the address to find waiters; it lies inside `word`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_address(word),
            libc::FUTEX_WAKE,
            i32::MAX,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn temp_file(name: &str, len: u64) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!("imds-sys-{}-{name}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(len).unwrap();
        (path, file)
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot map files")]
    fn two_mappings_of_one_file_share_words() {
        let (path, file) = temp_file("map", 4096);
        let a = Mapping::new(&file, 4096).unwrap();
        let b = Mapping::new(&file, 4096).unwrap();
        a.words()[7].store(0xdead_beef, Ordering::Release);
        assert_eq!(b.words()[7].load(Ordering::Acquire), 0xdead_beef);
        assert_eq!(a.words().len(), 512);
        assert!(Mapping::new(&file, 12).is_err());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "fcntl is a system call")]
    fn a_byte_lock_excludes_other_descriptions_and_not_its_own() {
        let (path, one) = temp_file("lock", 8);
        let other = File::options().read(true).write(true).open(&path).unwrap();
        assert!(try_lock_byte(&one, 3).unwrap());
        assert!(
            try_lock_byte(&one, 3).unwrap(),
            "a description's own lock does not conflict"
        );
        assert!(!try_lock_byte(&other, 3).unwrap());
        assert!(try_lock_byte(&other, 4).unwrap(), "locks are per byte");
        assert!(byte_is_locked(&other, 3).unwrap());
        assert!(!byte_is_locked(&one, 3).unwrap());
        drop(one);
        assert!(
            try_lock_byte(&other, 3).unwrap(),
            "closing the holder frees its locks"
        );
        unlock_byte(&other, 3).unwrap();
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "futex is a system call")]
    fn a_waiter_is_woken_through_another_mapping() {
        let (path, file) = temp_file("futex", 4096);
        let a = Mapping::new(&file, 4096).unwrap();
        let b = Mapping::new(&file, 4096).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                // Bounded: each wait is at most 1 s, and the loop ends when the value changes.
                for _ in 0..60 {
                    if a.words()[0].load(Ordering::Acquire) != 0 {
                        return true;
                    }
                    wait(&a.words()[0], 0, Duration::from_secs(1));
                }
                false
            });
            b.words()[0].store(1, Ordering::Release);
            wake_all(&b.words()[0]);
            assert!(waiter.join().unwrap());
        });
        std::fs::remove_file(path).unwrap();
    }
}
