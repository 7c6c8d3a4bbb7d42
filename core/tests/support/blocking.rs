//! A minimal blocking driver over `std::net`, shared by the demo and the end-to-end tests.
//! (The real std driver is the `imds-cache-ffi` crate; this one keeps the core honest.)
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imds_cache::{
    Done, Endpoint, Feed, Key, Lookup, OutcomeClass, Storage, Ticket, TokenCache, Transport,
};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// D5's protocol, blocking: hits return at once; fetches go on the wire; waits sleep.
pub(crate) fn get_token<S: Storage>(
    cache: &mut TokenCache<S>,
    key: &Key<'_>,
    endpoint: &Endpoint<'_>,
    out: &mut [u8],
) -> Result<(usize, u64), String> {
    let deadline = now_ms() + 90_000;
    loop {
        let wait_until = match cache
            .lookup(key, now_ms(), out)
            .map_err(|e| e.to_string())?
        {
            Lookup::Hit {
                len,
                expires_on_ms,
                refresh,
            } => {
                if let Some(ticket) = refresh {
                    fetch(cache, ticket, endpoint)?;
                }
                return Ok((len, expires_on_ms));
            }
            Lookup::Fetch(ticket) => {
                fetch(cache, ticket, endpoint)?;
                continue;
            }
            Lookup::Pending { retry_at_ms } | Lookup::Throttled { retry_at_ms } => retry_at_ms,
            Lookup::Failed { error, retry_at_ms }
                if error.kind.class() == OutcomeClass::Retry && retry_at_ms < deadline =>
            {
                eprintln!("  retrying after: {error}");
                retry_at_ms
            }
            Lookup::Failed { error, .. } => return Err(error.to_string()),
            Lookup::BufferTooSmall { needed } => return Err(format!("token needs {needed} bytes")),
        };
        if wait_until >= deadline {
            return Err("deadline passed".into());
        }
        std::thread::sleep(Duration::from_millis(
            wait_until.saturating_sub(now_ms()).max(1),
        ));
    }
}

/// One fetch for `ticket`: the request on the wire, its response fed to the cache as it
/// arrives, and for Arc the second leg with the key file's contents.
pub(crate) fn fetch<S: Storage>(
    cache: &mut TokenCache<S>,
    ticket: Ticket,
    endpoint: &Endpoint<'_>,
) -> Result<(), String> {
    let mut request = [0u8; 8192];
    let mut d = cache
        .request_at(ticket, endpoint, now_ms(), &mut request)
        .map_err(|e| e.to_string())?;
    loop {
        let Some(path) = exchange(cache, ticket, &request[..d.len], (d.host, d.port))? else {
            return Ok(());
        };
        let key = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        d = cache
            .complete_challenge(ticket, endpoint, &key, now_ms(), &mut request)
            .map_err(|e| e.to_string())?;
    }
}

/// One request and its response; `Some(path)` when Arc asks for its key file. A failure is
/// recorded by the cache (the next lookup reports it or retries after the backoff).
fn exchange<S: Storage>(
    cache: &mut TokenCache<S>,
    ticket: Ticket,
    request: &[u8],
    to: (&str, u16),
) -> Result<Option<String>, String> {
    let addr = to.to_socket_addrs().ok().and_then(|mut a| a.next());
    let stream = addr.and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok());
    let Some(mut stream) = stream else {
        cache
            .fail(ticket, Transport::Refused, now_ms())
            .map_err(|e| e.to_string())?;
        return Ok(None);
    };
    if stream.write_all(request).is_err() {
        cache
            .fail(ticket, Transport::Reset, now_ms())
            .map_err(|e| e.to_string())?;
        return Ok(None);
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk) else {
            cache
                .fail(ticket, Transport::Reset, now_ms())
                .map_err(|e| e.to_string())?;
            return Ok(None);
        };
        let done = if n == 0 {
            cache
                .eof(ticket, &mut received, now_ms())
                .map_err(|e| e.to_string())?
        } else {
            received.extend_from_slice(&chunk[..n]);
            // The cache re-parses from the start; it rearranges the bytes only once complete.
            match cache
                .feed(ticket, &mut received, now_ms())
                .map_err(|e| e.to_string())?
            {
                Feed::NeedMore => continue,
                Feed::Done(done) => done,
            }
        };
        return Ok(match done {
            Done::NeedKeyFile { path } => Some(path.to_string()),
            _ => None,
        });
    }
}
