//! Driver errors as the Python exceptions of `imds_cache._errors`: `CredentialUnavailableError`
//! when no managed identity can be had here, `ManagedIdentityError` for the rest, `ValueError`
//! for malformed input. `code` is the driver's own stable code (`Error::code`), one to one.

use imds_cache::{Failure, FailureKind, Flavour, Identity};
use imds_cache_client::{Client, Error};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyType};

/// The Python exception classes, defined in `imds_cache._errors`.
static UNAVAILABLE: GILOnceCell<Py<PyType>> = GILOnceCell::new();
static FAILED: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// Whether `e` means "no managed identity here" (a chained credential moves on): no
/// endpoint (D20, AKS workload identity), or an identity this resource does not have (IMDS
/// answers 400 for it, as azure-identity reads it; Service Fabric 404s).
fn unavailable(e: &Error, flavour: Flavour) -> bool {
    match e {
        Error::Failed { failure, .. } => {
            let Failure { kind, status } = *failure;
            e.is_unavailable()
                || kind == FailureKind::IdentityNotFound
                || (flavour == Flavour::Imds && status == 400)
        }
        _ => e.is_unavailable(),
    }
}

/// The Python exception for a driver error; `at` is the client and identity of the call,
/// when there is a client, so the message names the endpoint and the identity.
pub(crate) fn to_pyerr(py: Python<'_>, e: Error, at: Option<(&Client, &Identity<'_>)>) -> PyErr {
    if let Error::Identity(_) | Error::Resource(_) = e {
        return PyValueError::new_err(e.to_string());
    }
    let (flavour, text) = match at {
        Some((client, identity)) => (client.flavour(), client.explain(&e, identity)),
        None => (Flavour::Imds, e.to_string()),
    };
    let message = format!("ManagedIdentityCredential: {text}");
    let (endpoint_code, description, status) = match &e {
        Error::Failed { failure, detail } => (
            (!detail.code.is_empty()).then(|| detail.code.to_string()),
            if detail.description.is_empty() {
                failure.kind.as_str().to_string()
            } else {
                detail.description.to_string()
            },
            (failure.status != 0).then_some(failure.status),
        ),
        Error::Deadline { last } => (
            None,
            e.to_string(),
            last.and_then(|f| (f.status != 0).then_some(f.status)),
        ),
        _ => (None, e.to_string(), None),
    };
    let (cell, name) = if unavailable(&e, flavour) {
        (&UNAVAILABLE, "CredentialUnavailableError")
    } else {
        (&FAILED, "ManagedIdentityError")
    };
    let made = cell.import(py, "imds_cache._errors", name).and_then(|cls| {
        let kwargs = PyDict::new(py);
        kwargs.set_item("code", e.code())?;
        kwargs.set_item("endpoint_code", endpoint_code)?;
        kwargs.set_item("description", description)?;
        kwargs.set_item("status", status)?;
        cls.call((message,), Some(&kwargs))
    });
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(err) => err,
    }
}
