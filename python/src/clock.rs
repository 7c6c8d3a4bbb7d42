//! A clock that tests move by hand: a `TokenCache` made with one reads its time from it, so
//! refresh, expiry and backoff tests run without waiting for the wall clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use imds_cache_client::{now_ms, Clock};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The wall clock at its making plus what [`advance`](FakeClock::advance) added; it moves
/// only when told. Reading it takes no lock and never calls into Python.
#[pyclass(module = "imds_cache._imds_cache", frozen)]
pub(crate) struct FakeClock {
    now_ms: Arc<AtomicU64>,
}

impl FakeClock {
    /// The client's clock reading this one.
    pub(crate) fn clock(&self) -> Clock {
        let now = self.now_ms.clone();
        Clock::new(move || now.load(Ordering::Acquire))
    }
}

#[pymethods]
impl FakeClock {
    #[new]
    fn new() -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(now_ms())),
        }
    }

    /// Moves the clock `seconds` forward (never back).
    fn advance(&self, seconds: f64) -> PyResult<()> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(PyValueError::new_err(
                "seconds must be a non-negative number",
            ));
        }
        self.now_ms
            .fetch_add((seconds * 1000.0) as u64, Ordering::AcqRel);
        Ok(())
    }

    /// Now on this clock, epoch seconds.
    #[getter]
    fn now_s(&self) -> f64 {
        self.now_ms.load(Ordering::Acquire) as f64 / 1000.0
    }
}
