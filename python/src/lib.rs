//! `imds_cache._imds_cache`: the native module of the Python wheel, a thin pyo3 layer over
//! the std driver (`imds-cache-client`). The public Python API lives in the `imds_cache`
//! package, which re-exports what it needs from here and reads its defaults, flavour names,
//! counter names and error codes from this module's constants, so each is written once, in
//! Rust.

mod binding;
mod cache;
mod clock;
mod errors;
mod exit_gate;
mod logging;

use imds_cache::{parse_arm_identity, FailureKind, Flavour, Stats, UserAssigned};
use imds_cache_client::Error;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// The identities an ARM `identity` property grants (both the `userAssignedIdentities`
/// dictionary and the old `identityIds` array), as `(kind, value)` pairs for
/// `TokenCache.prefetch`: `("system", None)` first when the system-assigned one is enabled,
/// then `("resource_id", id)` for each user-assigned one.
#[pyfunction]
fn identities_from_arm(json: &str) -> PyResult<Vec<(&'static str, Option<String>)>> {
    let mut scratch = vec![0u8; json.len()];
    // Each listed identity takes more than 16 bytes of JSON, so this many entries always do.
    let mut out = vec![UserAssigned::EMPTY; json.len() / 16 + 1];
    let granted = parse_arm_identity(json.as_bytes(), &mut scratch, &mut out)
        .map_err(|e| PyValueError::new_err(format!("ARM identity property: {e}")))?;
    let mut ids = Vec::with_capacity(granted.user_assigned + 1);
    if granted.system {
        ids.push(("system", None));
    }
    for u in &out[..granted.user_assigned] {
        ids.push(("resource_id", Some(u.resource_id.to_string())));
    }
    Ok(ids)
}

/// The module: `TokenCache`, `Binding`, `identities_from_arm`, `__version__` (the Cargo
/// version), `DEFAULTS`, `FLAVOURS`, `STATS_FIELDS`, `ERROR_CODES`, and `_close_gate`
/// (registered with `atexit`, see [`exit_gate`]).
#[pymodule]
fn _imds_cache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULTS", cache::defaults(py)?)?;
    m.add(
        "FLAVOURS",
        PyTuple::new(py, Flavour::ALL.iter().map(|f| f.name()))?,
    )?;
    m.add(
        "STATS_FIELDS",
        PyTuple::new(py, Stats::default().fields().map(|(name, _)| name))?,
    )?;
    // Every `code` an exception can carry: the driver's own, and the failure kinds' for a
    // failed fetch (some name the same thing: `unavailable`, `cache_full`).
    let codes = Error::CODES
        .iter()
        .copied()
        .chain(FailureKind::ALL.iter().map(|k| k.code()))
        .collect::<std::collections::BTreeSet<_>>();
    m.add("ERROR_CODES", PyTuple::new(py, codes)?)?;
    m.add_class::<cache::TokenCache>()?;
    m.add_class::<binding::Binding>()?;
    m.add_class::<clock::FakeClock>()?;
    m.add_function(wrap_pyfunction!(identities_from_arm, m)?)?;
    m.add_function(wrap_pyfunction!(exit_gate::_close_gate, m)?)?;
    let close = m.getattr("_close_gate")?;
    py.import("atexit")?.call_method1("register", (close,))?;
    Ok(())
}
