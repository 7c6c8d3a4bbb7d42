//! `Binding`: one identity at one endpoint of a cache, what a credential holds; its calls
//! are the credential's hit and miss paths.
//!
//! Waiting never holds the GIL. Both paths hand a miss to the driver's worker pool: a blocking
//! call waits for the answer with the GIL released, in slices between which signal handlers
//! run (Ctrl-C interrupts it); the asyncio path's callback takes the GIL only to schedule the
//! result on the event loop with `loop.call_soon_threadsafe`.

use std::cell::RefCell;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use imds_cache::{Identity, IdentityKind, Resource};
use imds_cache_client::{Callback, Client, Error};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyString;
use zeroize::Zeroize;

use crate::errors::to_pyerr;
use crate::{exit_gate, logging};

thread_local! {
    /// Where a token lands before it becomes a Python `str`; wiped after each use.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An identity selector as Python gives it: kind name and value.
pub(crate) fn identity_of<'a>(kind: &str, value: &'a str) -> PyResult<Identity<'a>> {
    let identity = match kind {
        "system" => Ok(Identity::SYSTEM),
        "client_id" => Identity::client_id(value),
        "object_id" => Identity::object_id(value),
        "resource_id" => Identity::resource_id(value),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown identity kind {other:?}"
            )))
        }
    };
    identity.map_err(|e| PyValueError::new_err(format!("{kind}: {e}")))
}

/// The token in `buf[..len]` as a Python `str`; the buffer is wiped.
fn take_token<'py>(py: Python<'py>, buf: &mut [u8], len: usize) -> PyResult<Bound<'py, PyString>> {
    let text = std::str::from_utf8(&buf[..len])
        .map(|t| PyString::new(py, t))
        .map_err(|_| PyRuntimeError::new_err("the token is not UTF-8"));
    buf[..len].zeroize();
    text
}

/// One identity at one endpoint of a cache: what a credential holds.
#[pyclass(module = "imds_cache._imds_cache", frozen)]
pub(crate) struct Binding {
    /// The driver client, or why there is none (D11: AKS workload identity).
    client: Result<Arc<Client>, Error>,
    kind: IdentityKind,
    value: String,
    max_token_bytes: usize,
    /// The cache's overall deadline, for waits on the worker pool.
    deadline: Duration,
}

impl Binding {
    pub(crate) fn new(
        client: Result<Arc<Client>, Error>,
        kind: IdentityKind,
        value: String,
        max_token_bytes: usize,
        deadline: Duration,
    ) -> Self {
        Self {
            client,
            kind,
            value,
            max_token_bytes,
            deadline,
        }
    }

    fn parts<'s>(
        &'s self,
        py: Python<'_>,
        scope: &'s str,
    ) -> PyResult<(&'s Arc<Client>, Identity<'s>, Resource<'s>)> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| to_pyerr(py, e.clone(), None))?;
        let identity = Identity::new(self.kind, &self.value)
            .map_err(|e| PyValueError::new_err(format!("identity: {e}")))?;
        let resource = Resource::from_scopes(&[scope])
            .map_err(|e| PyValueError::new_err(format!("scope: {e}")))?;
        Ok((client, identity, resource))
    }

    /// The first step of both paths: `lookup` (a `get_token_or_notify`) runs on this thread's
    /// token buffer; a hit becomes `(token, expires_on)` and the buffer is wiped, `None` means
    /// the notify callback will answer.
    fn hit_or_notify<'py>(
        &self,
        py: Python<'py>,
        at: (&Client, &Identity<'_>),
        lookup: impl FnOnce(&mut [u8]) -> Result<Option<(usize, u64)>, Error>,
    ) -> PyResult<Option<(Bound<'py, PyString>, u64)>> {
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < self.max_token_bytes {
                buf.resize(self.max_token_bytes, 0);
            }
            match lookup(&mut buf[..]) {
                Ok(Some((len, expires_on_s))) => {
                    Ok(Some((take_token(py, &mut buf, len)?, expires_on_s)))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(to_pyerr(py, e, Some(at))),
            }
        })
    }
}

#[pymethods]
impl Binding {
    /// The token for `scope` and its expiry (epoch seconds); `bypass` drops the cached token
    /// first (a claims challenge). A hit returns at once. A miss goes to the driver's worker
    /// pool and this thread waits for its answer with the GIL released, in slices of 100 ms
    /// between which Python's signal handlers run: Ctrl-C raises `KeyboardInterrupt` here at
    /// once, while the fetch goes on and fills the cache for the next call.
    #[pyo3(signature = (scope, bypass = false))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        scope: PyBackedStr,
        bypass: bool,
    ) -> PyResult<(Bound<'py, PyString>, u64)> {
        let inside = exit_gate::enter_from_python()?;
        let (client, identity, resource) = self.parts(py, &scope)?;
        let _ = logging::read_log_gate(py);
        let deadline = Instant::now() + self.deadline;
        let (tx, rx) = mpsc::sync_channel(1);
        let notify: Callback = Box::new(move |result| {
            // Nobody waits any more (interrupted): the copy is wiped, the cache keeps its own.
            if let Err(mpsc::SendError(Ok((mut token, _)))) = tx.send(result) {
                token.zeroize();
            }
        });
        let hit = self.hit_or_notify(py, (client, &identity), |out| {
            exit_gate::allow_threads(py, &inside, || {
                if bypass {
                    client.invalidate(&identity, &resource);
                }
                client.get_token_or_notify(&identity, &resource, out, deadline, notify)
            })
        })?;
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let mut rx = rx;
        loop {
            let (back, got) = exit_gate::allow_threads(py, &inside, move || {
                let got = rx.recv_timeout(Duration::from_millis(100));
                (rx, got)
            });
            rx = back;
            match got {
                Ok(Ok((mut token, expires_on_s))) => {
                    let len = token.len();
                    return Ok((take_token(py, &mut token, len)?, expires_on_s));
                }
                Ok(Err(e)) => return Err(to_pyerr(py, e, Some((client, &identity)))),
                Err(mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err("the driver dropped the call"))
                }
            }
        }
    }

    /// The asyncio path: a hit returns `(token, expires_on)` at once; otherwise `None`, and
    /// a driver worker later calls `call_soon_threadsafe(done, (token, expires_on), None)` or
    /// `call_soon_threadsafe(done, None, error)` (no thread per call).
    #[pyo3(signature = (scope, bypass, call_soon_threadsafe, done))]
    fn get_or_notify<'py>(
        &self,
        py: Python<'py>,
        scope: PyBackedStr,
        bypass: bool,
        call_soon_threadsafe: PyObject,
        done: PyObject,
    ) -> PyResult<Option<(Bound<'py, PyString>, u64)>> {
        let (client, identity, resource) = self.parts(py, &scope)?;
        let _ = logging::read_log_gate(py);
        let deadline = Instant::now() + self.deadline;
        if bypass {
            client.invalidate(&identity, &resource);
        }
        // For the error's message; weak, as the callback waits inside the client.
        let (weak, kind, value) = (Arc::downgrade(client), self.kind, self.value.clone());
        let notify: Callback = Box::new(move |result| {
            // At exit nobody awaits the answer: the token copy is wiped, the cache keeps its own.
            let mut result = Some(result);
            exit_gate::with_gil(|py| {
                let Some(result) = result.take() else { return };
                let (value, error) = match result {
                    Ok((mut token, expires_on_s)) => {
                        let len = token.len();
                        let value = take_token(py, &mut token, len)
                            .map(|t| (t, expires_on_s).into_pyobject(py).map(|v| v.into_any()));
                        match value {
                            Ok(Ok(v)) => (v, py.None().into_bound(py)),
                            Ok(Err(e)) | Err(e) => (
                                py.None().into_bound(py),
                                e.into_value(py).into_bound(py).into_any(),
                            ),
                        }
                    }
                    Err(e) => (
                        py.None().into_bound(py),
                        {
                            let client = weak.upgrade();
                            let identity = Identity::new(kind, &value).ok();
                            let at = client.as_deref().zip(identity.as_ref());
                            to_pyerr(py, e, at)
                        }
                        .into_value(py)
                        .into_bound(py)
                        .into_any(),
                    ),
                };
                // A closed loop cannot take the answer: nobody is waiting any more.
                let _ = call_soon_threadsafe.call1(py, (done, value, error));
            });
            if let Some(Ok((mut token, _))) = result {
                token.zeroize();
            }
        });
        self.hit_or_notify(py, (client, &identity), |out| {
            client.get_token_or_notify(&identity, &resource, out, deadline, notify)
        })
    }

    /// When the cached token of `scope` is due for refresh (epoch seconds, with the cache's
    /// per-key jitter), or `None` when none is held.
    fn refresh_on_s(&self, py: Python<'_>, scope: PyBackedStr) -> PyResult<Option<u64>> {
        let (client, identity, resource) = self.parts(py, &scope)?;
        Ok(client.refresh_on_s(&identity, &resource))
    }

    /// Drops the cached token of `scope` (after a downstream 401); `True` if there was one.
    fn invalidate(&self, py: Python<'_>, scope: PyBackedStr) -> PyResult<bool> {
        let (client, identity, resource) = self.parts(py, &scope)?;
        Ok(client.invalidate(&identity, &resource))
    }

    /// The endpoint flavour (`None` when no endpoint can serve here).
    #[getter]
    fn flavour(&self) -> Option<&'static str> {
        self.client.as_ref().ok().map(|c| c.flavour().name())
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        let client = std::mem::replace(&mut self.client, Err(Error::CacheFull));
        // Only the last holder's drop joins the refresher.
        if let Ok(client) = client {
            if Arc::strong_count(&client) == 1 {
                exit_gate::drop_released(client);
            }
        }
    }
}
