//! One cache and one request budget per host (opt-in): the table in a file every process of
//! the user maps, written under a file lock, and a budget file every library version shares.

pub(crate) mod budget;
pub(crate) mod region;
pub(crate) mod sys;
pub(crate) mod table;

use std::path::PathBuf;
use std::sync::Arc;

use budget::Gate;

/// Where a client finds an endpoint's request budget: one per endpoint for every client of
/// the process, or, with the host's directory, for every process of the user.
pub(crate) struct Budgets {
    host: Option<(PathBuf, u32)>,
}

impl Budgets {
    pub(crate) fn process() -> Self {
        Self { host: None }
    }

    pub(crate) fn host(dir: PathBuf, euid: u32) -> Self {
        Self {
            host: Some((dir, euid)),
        }
    }

    /// The gate of `endpoint`: the host's when this client shares it (its file was checked
    /// when the client was made; should it fail later, the process's), else the process's.
    pub(crate) fn gate(&self, endpoint: &str) -> Arc<Gate> {
        if let Some((dir, euid)) = &self.host {
            if let Ok(gate) = budget::host_gate(dir, *euid, endpoint) {
                return gate;
            }
        }
        budget::process_gate(endpoint)
    }
}

/// A cache over the host's table for `endpoint`, and the host's budgets; `Err` says why the
/// client must keep its own (the caller warns once).
pub(crate) fn open_cache(
    config: &crate::ClientConfig,
    layout: imds_cache::StorageLayout,
    endpoint: &str,
) -> Result<(crate::shared::Cache, Arc<table::HostTable>, Budgets), String> {
    use crate::shared::TableWords;
    let euid = region::effective_uid().map_err(|e| format!("/proc/self: {e}"))?;
    let env = |name: &str| -> Option<std::ffi::OsString> {
        match (name, &config.share_dir) {
            ("IMDS_CACHE_DIR", Some(dir)) => Some(dir.clone().into_os_string()),
            _ => std::env::var_os(name),
        }
    };
    let dir = region::directory(env, euid).map_err(|e| e.to_string())?;
    // The budget file is checked now, so that a client shares both or neither.
    budget::host_gate(&dir, euid, endpoint).map_err(|e| e.to_string())?;
    let opening = table::open(&dir, euid, &layout, endpoint)?;
    let made = |table: &Arc<table::HostTable>, fresh: bool| {
        let words = TableWords::Host(Arc::clone(table));
        let cache = config.cache.clone();
        if fresh {
            imds_cache::TokenCache::with_words(cache, layout, words)
        } else {
            imds_cache::TokenCache::attach_words(cache, layout, words)
        }
        .map_err(|e| e.to_string())
    };
    let (cache, table) = match opening {
        table::Opening::Joined(table) => (made(&table, false)?, table),
        table::Opening::Fresh(table, init) => {
            let mut cache = made(&table, true)?;
            cache.share_table();
            table.publish(init, cache.writer_state());
            (cache, table)
        }
    };
    Ok((cache, table, Budgets::host(dir, euid)))
}

/// Test-only views of a client's host table (the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
pub mod hooks {
    use std::sync::atomic::Ordering;

    /// Whether the client shares the host's table.
    pub fn shares_host(client: &crate::Client) -> bool {
        client.shared.host.is_some()
    }

    /// Tables this client found torn and emptied.
    pub fn repairs(client: &crate::Client) -> u64 {
        client.shared.host.as_ref().map_or(0, |t| t.repairs())
    }

    /// Dies as a writer would inside a write: with the host table's write lock held and the
    /// table marked dirty, the first slot's sequence goes odd, and the process ends at once
    /// (no unwinding, no unlock: the kernel drops the lock).
    pub fn die_mid_write(client: &crate::Client) -> ! {
        let state = client.shared.lock();
        if let Some(table) = &client.shared.host {
            let seq = &table.as_ref().as_ref()[0];
            seq.fetch_add(1, Ordering::SeqCst);
        }
        std::mem::forget(state);
        std::process::abort()
    }
}
