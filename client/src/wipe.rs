//! Buffers that hold a secret for the length of one fetch (D13): the request (a secret
//! header, Arc's key), the response (the token) and the key file's contents. A buffer never
//! reallocates behind our back (a `Vec` that grows frees its old copy unwiped): it grows only
//! through [`Wiped::grow`], which wipes the old copy, and it is wiped when dropped, on every
//! path out of the fetch.

use std::ops::{Deref, DerefMut};

use zeroize::Zeroize;

/// What a [`Wiped`] buffer held, for the test hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "test-hooks"), allow(unreachable_pub))]
pub enum BufferKind {
    /// A request (carries the secret header, or Arc's key in the second leg).
    Request,
    /// The bytes received (the token).
    Response,
    /// Arc's key file's contents.
    ArcKey,
}

/// A fixed-size byte buffer, zeroed when dropped.
pub(crate) struct Wiped {
    bytes: Box<[u8]>,
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    kind: BufferKind,
}

impl Wiped {
    /// `len` zero bytes.
    pub(crate) fn new(len: usize, kind: BufferKind) -> Self {
        Self {
            bytes: vec![0u8; len].into_boxed_slice(),
            kind,
        }
    }
}

impl Wiped {
    /// Grows the buffer to `len` bytes, keeping its contents; the old copy is wiped.
    pub(crate) fn grow(&mut self, len: usize) {
        if len <= self.bytes.len() {
            return;
        }
        let mut bigger = vec![0u8; len].into_boxed_slice();
        bigger[..self.bytes.len()].copy_from_slice(&self.bytes);
        let old = std::mem::replace(&mut self.bytes, bigger);
        drop(Self {
            bytes: old,
            kind: self.kind,
        });
    }
}

impl Deref for Wiped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for Wiped {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.bytes.zeroize();
        #[cfg(feature = "test-hooks")]
        hooks::witness(self.kind, &self.bytes);
    }
}

/// Test-only: every [`Wiped`] buffer as it was when freed, so that a test can check that no
/// byte of a token, a secret or a key survived. Not compiled without the `test-hooks`
/// feature, so it costs nothing in a normal build.
#[cfg(feature = "test-hooks")]
pub mod hooks {
    use parking_lot::Mutex;

    use super::BufferKind;

    static SEEN: Mutex<Vec<(BufferKind, Vec<u8>)>> = Mutex::new(Vec::new());

    pub(super) fn witness(kind: BufferKind, bytes: &[u8]) {
        SEEN.lock().push((kind, bytes.to_vec()));
    }

    /// The buffers freed since the last call, each with what it held, as they were at the
    /// moment they were freed.
    pub fn take_freed() -> Vec<(BufferKind, Vec<u8>)> {
        std::mem::take(&mut *SEEN.lock())
    }
}
