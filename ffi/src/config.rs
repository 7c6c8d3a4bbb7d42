//! The configuration builder: `imds_cache_config_new`, `_set_…`, `_free`. A setter that would
//! put a value out of bounds fails with `IMDS_CACHE_RESULT_INVALID_CONFIG` and leaves the
//! configuration as it was, so a configuration is always valid.

use std::time::Duration;

use ::imds_cache::Flavour;
use imds_cache_client::Share;

use crate::result::from_error;
use crate::settings::{endpoint_of, EndpointSpec, Settings, IMDS_AUTHORITY};
use crate::{bytes, guard, imds_cache_result, non_null, put};

/// Most entries a cache may be configured for.
pub const IMDS_CACHE_MAX_CAPACITY: usize = 1 << 24;
/// Fewest arena bytes per entry.
pub const IMDS_CACHE_MIN_BYTES_PER_ENTRY: usize = 256;
/// Most arena bytes per entry.
pub const IMDS_CACHE_MAX_BYTES_PER_ENTRY: usize = 1 << 20;

/// A configuration for `imds_cache_new` and `imds_cache_sansio_init`: the cache's policy
/// (budget, lease, backoff, limits), its size, and where tokens come from. Opaque; made by
/// `imds_cache_config_new`, freed by `imds_cache_config_free`. The handles copy what they
/// need, so a configuration may be freed (or changed and reused) once a handle is made.
/// Not thread-safe: do not change one configuration from two threads at once.
pub struct imds_cache_config {
    pub(crate) inner: Settings,
}

/// The kinds of managed-identity endpoint (the values match the core's `Flavour`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_flavour {
    /// The Instance Metadata Service on VMs and scale sets (169.254.169.254).
    Imds = 0,
    /// App Service, Functions, Container Apps: protocol 2019-08-01 (`IDENTITY_ENDPOINT`,
    /// `IDENTITY_HEADER`).
    AppService2019 = 1,
    /// The 2017-09-01 form (`MSI_ENDPOINT`, `MSI_SECRET`): App Service 2017, Azure ML.
    Msi2017 = 2,
    /// Azure Arc-enabled servers, with the key-file challenge.
    Arc = 3,
    /// Azure Cloud Shell.
    CloudShell = 4,
    /// Service Fabric (HTTPS with a pinned certificate: sans-IO only, the caller's TLS).
    ServiceFabric = 5,
    /// The retired VM extension at localhost:50342 (only ever chosen explicitly).
    VmExtension = 6,
}

impl imds_cache_flavour {
    pub(crate) fn from_u32(v: u32) -> Option<Flavour> {
        Flavour::ALL.get(v as usize).copied()
    }

    pub(crate) fn from_core(f: Flavour) -> Self {
        match f {
            Flavour::Imds => Self::Imds,
            Flavour::AppService2019 => Self::AppService2019,
            Flavour::Msi2017 => Self::Msi2017,
            Flavour::Arc => Self::Arc,
            Flavour::CloudShell => Self::CloudShell,
            Flavour::ServiceFabric => Self::ServiceFabric,
            _ => Self::VmExtension,
        }
    }
}

fn utf8(b: &[u8]) -> Result<&str, imds_cache_result> {
    std::str::from_utf8(b).map_err(|_| imds_cache_result::InvalidArgument)
}

/// Applies `f` to a copy of the configuration and keeps it only if the result is valid.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
unsafe fn edit(
    config: *mut imds_cache_config,
    f: impl FnOnce(&mut Settings) -> Result<(), imds_cache_result>,
) -> imds_cache_result {
    guard(|| {
        non_null(config)?;
        // SAFETY: not NULL; a live configuration by the caller's contract.
        let current = unsafe { &mut (*config).inner };
        let mut next = current.clone();
        f(&mut next)?;
        next.cache
            .validate()
            .map_err(|_| imds_cache_result::InvalidConfig)?;
        *current = next;
        Ok(())
    })
}

fn positive(ms: u64) -> Result<Duration, imds_cache_result> {
    if ms == 0 {
        Err(imds_cache_result::InvalidConfig)
    } else {
        Ok(Duration::from_millis(ms))
    }
}

/// Makes a configuration with the defaults of DESIGN.md: 4096 entries of 2560 arena bytes,
/// 16 KiB tokens at most, 20 requests/s and 5 in flight per endpoint, 30 s leases, backoff
/// 1 s doubling to 16 s, a 90 s deadline for blocking calls, a background refresher, and the
/// endpoint detected from the environment (D11) by `imds_cache_new` (the sans-IO handle uses
/// IMDS unless an endpoint is set).
///
/// On success `*out_config` owns a new configuration; free it with `imds_cache_config_free`.
///
/// # Safety
/// `out_config` is valid for a write (NULL is `IMDS_CACHE_RESULT_NULL_POINTER`).
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_new(
    out_config: *mut *mut imds_cache_config,
) -> imds_cache_result {
    guard(|| {
        non_null(out_config)?;
        let config = Box::new(imds_cache_config {
            inner: Settings::default(),
        });
        // SAFETY: checked not NULL; valid by contract.
        unsafe { put(out_config, Box::into_raw(config)) }
    })
}

/// Frees a configuration made by `imds_cache_config_new`. NULL does nothing. Handles made
/// from it are not affected.
///
/// # Safety
/// `config` is NULL or a configuration from `imds_cache_config_new` not freed yet and not in
/// use by another call.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_free(config: *mut imds_cache_config) {
    let _ = std::panic::catch_unwind(|| {
        if !config.is_null() {
            // SAFETY: made by Box::into_raw in imds_cache_config_new, freed once.
            drop(unsafe { Box::from_raw(config) });
        }
    });
}

/// Sets how many entries (identity, resource pairs) the cache holds: 1 to
/// `IMDS_CACHE_MAX_CAPACITY` (default 4096).
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_capacity(
    config: *mut imds_cache_config,
    entries: usize,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            if entries == 0 || entries > IMDS_CACHE_MAX_CAPACITY {
                return Err(imds_cache_result::InvalidConfig);
            }
            c.capacity = entries;
            Ok(())
        })
    }
}

/// Sets the arena bytes per entry, on average (default 2560: a 2 KB token and its key); from
/// `IMDS_CACHE_MIN_BYTES_PER_ENTRY` to `IMDS_CACHE_MAX_BYTES_PER_ENTRY`.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_bytes_per_entry(
    config: *mut imds_cache_config,
    bytes: usize,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            if !(IMDS_CACHE_MIN_BYTES_PER_ENTRY..=IMDS_CACHE_MAX_BYTES_PER_ENTRY).contains(&bytes) {
                return Err(imds_cache_result::InvalidConfig);
            }
            c.bytes_per_entry = bytes;
            Ok(())
        })
    }
}

/// Sets the largest token accepted (default 16 KiB, at least 8 KiB): a larger one is an
/// error, never truncated (D2).
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_max_token_bytes(
    config: *mut imds_cache_config,
    bytes: usize,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.cache.max_token_bytes = bytes;
            Ok(())
        })
    }
}

/// Sets the request budget per endpoint (D9): at most `rate` request starts (1 to 128) in any
/// `window_ms` (> 0) and `in_flight` (1 to 32) requests at once. Default 20 per 1000 ms, 5.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_budget(
    config: *mut imds_cache_config,
    rate: u32,
    window_ms: u64,
    in_flight: u32,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.cache.rate = rate;
            c.cache.rate_window_ms = window_ms;
            c.cache.in_flight = in_flight;
            Ok(())
        })
    }
}

/// Sets the lease of a fetch (default 30000 ms, > 0): after it another caller may fetch, and a
/// late completion is refused as a stale ticket.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_fetch_timeout_ms(
    config: *mut imds_cache_config,
    ms: u64,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.cache.fetch_timeout_ms = ms;
            Ok(())
        })
    }
}

/// Sets the refresh times (D8): a token with less than `min_lifetime_ms` left is never handed
/// out (default 60000), and a token is refreshed no later than `refresh_margin_ms` before it
/// expires (default 300000).
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_lifetimes_ms(
    config: *mut imds_cache_config,
    min_lifetime_ms: u64,
    refresh_margin_ms: u64,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.cache.min_lifetime_ms = min_lifetime_ms;
            c.cache.refresh_margin_ms = refresh_margin_ms;
            Ok(())
        })
    }
}

/// Sets the retry backoff (D7): the first delay (> 0, default 1000 ms), doubling up to
/// `max_ms` (≥ `initial_ms`, default 16000), and how long a terminal failure is remembered
/// (`negative_ttl_ms`, default 30000).
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_backoff_ms(
    config: *mut imds_cache_config,
    initial_ms: u64,
    max_ms: u64,
    negative_ttl_ms: u64,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            if max_ms < initial_ms {
                return Err(imds_cache_result::InvalidConfig);
            }
            c.cache.backoff_initial_ms = initial_ms;
            c.cache.backoff_max_ms = max_ms;
            c.cache.negative_ttl_ms = negative_ttl_ms;
            Ok(())
        })
    }
}

/// Sets whether a token whose echoed `client_id` differs from the one asked for is refused
/// (default true).
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_verify_client_id(
    config: *mut imds_cache_config,
    verify: bool,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.cache.verify_client_id = verify;
            Ok(())
        })
    }
}

/// Sets the seed of the retry jitter (randomness is an input of the core).
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_seed(
    config: *mut imds_cache_config,
    seed: u64,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.cache.seed = seed;
            Ok(())
        })
    }
}

/// Sets the folder Arc's key file must be in (at most 256 bytes of UTF-8; empty means the
/// platform's default, `/var/opt/azcmagent/tokens` on Linux). The bytes are copied.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile; `dir` is
/// valid for `dir_len` bytes (or NULL when `dir_len` is 0).
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_arc_key_dir(
    config: *mut imds_cache_config,
    dir: *const u8,
    dir_len: usize,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            let dir = utf8(bytes(dir, dir_len)?)?;
            c.cache.arc_key_dir.clear();
            c.cache
                .arc_key_dir
                .push_str(dir)
                .map_err(|_| imds_cache_result::InvalidConfig)
        })
    }
}

/// Sets the blocking calls' limits (D7): the overall deadline of `imds_cache_get_token`
/// (default 90000 ms), the connect timeout per attempt (1000 ms) and the total read time per
/// attempt (10000 ms). Each must be > 0. The sans-IO handle ignores them.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_timeouts_ms(
    config: *mut imds_cache_config,
    deadline_ms: u64,
    connect_ms: u64,
    attempt_ms: u64,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.deadline = positive(deadline_ms)?;
            c.connect_timeout = positive(connect_ms)?;
            c.attempt_timeout = positive(attempt_ms)?;
            Ok(())
        })
    }
}

/// Sets whether `imds_cache_new` runs a background refresher thread (default true). Without
/// it, a caller that gets a token due for refresh refreshes it before returning. The sans-IO
/// handle has no threads and ignores this.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_refresher(
    config: *mut imds_cache_config,
    enabled: bool,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.refresher = enabled;
            Ok(())
        })
    }
}

/// Who shares a blocking handle's tokens and request budget (`imds_cache_config_set_share`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_share {
    /// `IMDS_CACHE_SHARE=host` means `IMDS_CACHE_SHARE_HOST`, anything else
    /// `IMDS_CACHE_SHARE_PROCESS` (the default).
    FromEnv = 0,
    /// The handle's own table; one request budget per endpoint for the whole process.
    Process = 1,
    /// One table and one budget for every process of this user on the host (Linux), in
    /// `$IMDS_CACHE_DIR`, else `$XDG_RUNTIME_DIR/imds-cache`, else
    /// `/run/user/<uid>/imds-cache`. Files that cannot be trusted or used make the handle keep
    /// its own table, with one WARNING line on stderr: sharing never fails a call.
    Host = 2,
}

/// Sets who shares the blocking handle's tokens and request budget: a value of
/// `imds_cache_share` (default `IMDS_CACHE_SHARE_FROM_ENV`); any other value is
/// `IMDS_CACHE_RESULT_INVALID_ARGUMENT`. The sans-IO handle has no files and ignores this.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_share(
    config: *mut imds_cache_config,
    share: u32,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            c.share = match share {
                0 => Share::FromEnv,
                1 => Share::Process,
                2 => Share::Host,
                _ => return Err(imds_cache_result::InvalidArgument),
            };
            Ok(())
        })
    }
}

/// Sets the endpoint explicitly instead of detecting it from the environment: a value of
/// `imds_cache_flavour`, and its URL — for IMDS the authority `http://host[:port]` as in
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST` (empty means `http://169.254.169.254`), for the others
/// the token URL as in `IDENTITY_ENDPOINT` / `MSI_ENDPOINT` (empty means localhost:50342 for
/// the VM extension). `secret` is `IDENTITY_HEADER` / `MSI_SECRET` (`(NULL, 0)` for none).
/// The bytes are copied. A malformed URL is `IMDS_CACHE_RESULT_INVALID_ENDPOINT`.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile; `url` and
/// `secret` are valid for their lengths (or NULL when the length is 0).
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_endpoint(
    config: *mut imds_cache_config,
    flavour: u32,
    url: *const u8,
    url_len: usize,
    secret: *const u8,
    secret_len: usize,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            let flavour =
                imds_cache_flavour::from_u32(flavour).ok_or(imds_cache_result::InvalidArgument)?;
            let invalid = |_| imds_cache_result::InvalidEndpoint;
            let url = std::str::from_utf8(bytes(url, url_len)?).map_err(invalid)?;
            let secret = std::str::from_utf8(bytes(secret, secret_len)?).map_err(invalid)?;
            let secret = (!secret.is_empty()).then_some(secret);
            endpoint_of(flavour, url, secret, None)
                .map_err(|_| imds_cache_result::InvalidEndpoint)?;
            let url = if flavour == Flavour::Imds && url.is_empty() {
                IMDS_AUTHORITY
            } else {
                url
            };
            c.endpoint = Some(EndpointSpec {
                flavour,
                url: url.to_string(),
                secret: secret.map(str::to_string),
                default_client_id: None,
            });
            Ok(())
        })
    }
}

/// Sets Azure ML's `DEFAULT_IDENTITY_CLIENT_ID` (sent as `clientid` for the system identity on
/// the 2017 form) on the endpoint set by `imds_cache_config_set_endpoint` or
/// `imds_cache_config_set_endpoint_from_env`; `(NULL, 0)` clears it. Without an endpoint set
/// this is `IMDS_CACHE_RESULT_INVALID_ARGUMENT`. The bytes are copied.
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile;
/// `client_id` is valid for `client_id_len` bytes (or NULL when that is 0).
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_default_client_id(
    config: *mut imds_cache_config,
    client_id: *const u8,
    client_id_len: usize,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            let id = utf8(bytes(client_id, client_id_len)?)?;
            match &mut c.endpoint {
                Some(e) => {
                    e.default_client_id = (!id.is_empty()).then(|| id.to_string());
                    Ok(())
                }
                None => Err(imds_cache_result::InvalidArgument),
            }
        })
    }
}

/// Detects the endpoint from the environment now (D11, azure-identity's order) and sets it as
/// if by `imds_cache_config_set_endpoint`: for the sans-IO handle, which reads no
/// environment. AKS workload identity is `IMDS_CACHE_RESULT_UNAVAILABLE`; a variable missing
/// for the detected kind is `IMDS_CACHE_RESULT_INVALID_ENDPOINT`. Reads the process
/// environment (not thread-safe against a concurrent `setenv`).
///
/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_config_set_endpoint_from_env(
    config: *mut imds_cache_config,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        edit(config, |c| {
            let e = imds_cache_client::detect_endpoint().map_err(from_error)?;
            c.endpoint = Some(EndpointSpec {
                flavour: e.flavour,
                url: e.url,
                secret: e.secret,
                default_client_id: e.default_client_id,
            });
            Ok(())
        })
    }
}
