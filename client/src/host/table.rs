//! The cache's table in the host's file: opened (or made) under the init lock, written by
//! one process at a time under the write lock, handed from writer to writer through the
//! header's words, repaired when a writer died mid-write, and the futex waiters in every
//! process sleep on.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imds_cache::{StorageLayout, Word, WriterState, WORD_BYTES};
use parking_lot::Mutex;

use super::region::{self, Opened, Region, ALLOC, DIRTY, WAKE, WRITE_LOCK};
use super::sys;

/// Bumped when the table's words mean something else: part of the layout hash, so that two
/// builds that disagree never map the same file.
const TABLE_FORMAT: u64 = 1;

/// The table of a [`Share::Host`](crate::Share::Host) client, mapped from the host's file.
pub(crate) struct HostTable {
    region: Region,
    /// The descriptor the write lock is taken on, and the process that opened it: a forked
    /// child opens its own, so that parent and child lock as two open file descriptions
    /// (and closing the inherited one unlocks nothing: the parent still holds it).
    lock_file: Mutex<(u32, File)>,
    /// Tables this process found torn and emptied.
    repairs: AtomicU64,
    /// The slots this process's fetches hold leases on, with how many fetches hold each (the
    /// lease byte is this process's while any does): a lock of this process's own never
    /// shows as held to it, so this is how it tells its own fetches from a dead process's.
    leases: Mutex<Vec<(u32, u32)>>,
}

/// How long a lease must have been held before a free lease byte is taken for its holder's
/// death: the byte is locked just after the lease is handed out, not with it.
pub(crate) const LEASE_GRACE_MS: u64 = 1_000;

impl AsRef<[Word]> for HostTable {
    fn as_ref(&self) -> &[Word] {
        self.region.table()
    }
}

/// A table just opened: one another process made (`Joined`), or one this process must reset
/// and then publish (`Fresh`: the init lock is held until `ready`).
pub(crate) enum Opening {
    Joined(Arc<HostTable>),
    Fresh(Arc<HostTable>, region::Init),
}

/// A hash of everything that decides where the table's words are: two layouts that differ
/// in any of it get different files.
pub(crate) fn layout_hash(layout: &StorageLayout) -> u64 {
    let parts = [
        TABLE_FORMAT,
        WORD_BYTES as u64,
        layout.slots as u64,
        layout.blocks as u64,
        layout.block_size as u64,
        layout.words as u64,
        layout.index_offset as u64,
        layout.links_offset as u64,
        layout.arena_offset as u64,
    ];
    // FNV-1a: stable across builds and versions, unlike std's hasher.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in parts.iter().flat_map(|p| p.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Opens the table for `endpoint` in `dir` (already checked), with the layout of `layout`.
pub(crate) fn open(
    dir: &Path,
    euid: u32,
    layout: &StorageLayout,
    endpoint: &str,
) -> Result<Opening, String> {
    let hash = layout_hash(layout);
    let netns = region::netns().map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    let boot_id = region::boot_id().map_err(|e| format!("boot_id: {e}"))?;
    let name = region::file_name(hash, endpoint, netns);
    let opened =
        region::open(dir, &name, euid, layout.words, hash, boot_id).map_err(|e| e.to_string())?;
    let (region, init) = match opened {
        Opened::Joined(r) => (r, None),
        Opened::Fresh(r, init) => (r, Some(init)),
    };
    let lock_file = reopen(&region).map_err(|e| format!("{}: {e}", region.path().display()))?;
    let table = Arc::new(HostTable {
        region,
        lock_file: Mutex::new((std::process::id(), lock_file)),
        repairs: AtomicU64::new(0),
        leases: Mutex::new(Vec::new()),
    });
    Ok(match init {
        Some(init) => Opening::Fresh(table, init),
        None => Opening::Joined(table),
    })
}

/// A second descriptor (its own open file description) for the region's file, checked to be
/// the same file.
fn reopen(region: &Region) -> std::io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(region.path())?;
    let (a, b) = (file.metadata()?, region.file().metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(std::io::Error::other(
            "the file was replaced while opening it",
        ));
    }
    Ok(file)
}

impl HostTable {
    fn header(&self) -> &[AtomicU64] {
        self.region.header()
    }

    /// Publishes a table this process has just reset: the header is written, READY last, and
    /// the init lock released.
    pub(crate) fn publish(&self, init: region::Init, state: WriterState) {
        self.store_state(state);
        init.ready(&self.region);
    }

    fn store_state(&self, state: WriterState) {
        let h = self.header();
        for (w, v) in h[ALLOC.start..ALLOC.start + 3].iter().zip(state.to_words()) {
            w.store(v, Ordering::SeqCst);
        }
    }

    /// Takes the write lock (after the process's own lock) and hands this process's cache the
    /// writer's role: the last writer's state, or a repair if that writer died mid-write.
    pub(crate) fn enter(&self, cache: &mut crate::shared::Cache) {
        let mut held = self.lock_file.lock();
        if held.0 != std::process::id() {
            // Forked: this process's own description; the inherited one is closed unlocked.
            if let Ok(file) = reopen(&self.region) {
                *held = (std::process::id(), file);
            }
        }
        let mut pause = Duration::from_micros(20);
        // Held for microseconds by a live holder; freed by the kernel if it died.
        while !matches!(sys::try_lock_byte(&held.1, WRITE_LOCK), Ok(true)) {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        let h = self.header();
        let words = [0, 1, 2].map(|i| h[ALLOC.start + i].load(Ordering::SeqCst));
        let torn = h[DIRTY].load(Ordering::SeqCst) != 0;
        if torn || cache.resume(WriterState::from_words(words)).is_err() {
            cache.repair();
            self.repairs.fetch_add(1, Ordering::Relaxed);
        }
        h[DIRTY].store(1, Ordering::SeqCst);
    }

    /// Hands the writer's role back: the state for the next writer, the dirty mark cleared,
    /// the write lock released.
    pub(crate) fn leave(&self, cache: &crate::shared::Cache) {
        let held = self.lock_file.lock();
        self.store_state(cache.writer_state());
        self.header()[DIRTY].store(0, Ordering::SeqCst);
        let _ = sys::unlock_byte(&held.1, WRITE_LOCK);
    }

    /// Wakes the waiters of every process: a fetch ended (with a token, a failure or its
    /// ticket given back). Only then: a waiter that woke everyone on each look would keep
    /// the others looking.
    pub(crate) fn notify(&self) {
        let h = self.header();
        h[WAKE].fetch_add(1, Ordering::SeqCst);
        sys::wake_all(&h[WAKE]);
    }

    /// The count a waiter compares against: it changes when a fetch ends in any process.
    pub(crate) fn changes(&self) -> u64 {
        self.header()[WAKE].load(Ordering::SeqCst)
    }

    /// Sleeps until a fetch ends after `seen` (in any process), or `timeout`.
    pub(crate) fn wait_for_change(&self, seen: u64, timeout: Duration) {
        if self.changes() == seen {
            sys::wait(&self.header()[WAKE], seen, timeout);
        }
    }

    /// Marks `slot`'s lease as held by this process while one of its fetches runs: the
    /// kernel frees the lease byte if the process dies, which tells waiters elsewhere to take
    /// over without waiting for the lease to run out.
    pub(crate) fn hold_lease(&self, slot: u32) {
        let mut leases = self.leases.lock();
        match leases.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, n)) => *n += 1,
            None => {
                let held = self.lock_file.lock();
                let _ = sys::try_lock_byte(&held.1, region::lease_lock(slot));
                leases.push((slot, 1));
            }
        }
    }

    /// The end of a fetch that [`hold_lease`](Self::hold_lease) marked.
    pub(crate) fn drop_lease(&self, slot: u32) {
        let mut leases = self.leases.lock();
        if let Some(i) = leases.iter().position(|(s, _)| *s == slot) {
            leases[i].1 -= 1;
            if leases[i].1 == 0 {
                leases.swap_remove(i);
                let held = self.lock_file.lock();
                let _ = sys::unlock_byte(&held.1, region::lease_lock(slot));
            }
        }
    }

    /// Whether the process holding `slot`'s lease is gone: not this one, and its lease byte
    /// is free.
    pub(crate) fn lease_holder_gone(&self, slot: u32) -> bool {
        let leases = self.leases.lock();
        if leases.iter().any(|(s, _)| *s == slot) {
            return false;
        }
        let held = self.lock_file.lock();
        matches!(
            sys::byte_is_locked(&held.1, region::lease_lock(slot)),
            Ok(false)
        )
    }

    /// Tables this process found torn and emptied (read by the test hooks).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn repairs(&self) -> u64 {
        self.repairs.load(Ordering::Relaxed)
    }
}
