//! The C ABI called from Rust as C would (unit tests: the crate builds no rlib that a test
//! crate could link). `sansio` and `alloc` do no I/O and run under Miri too.

mod alloc;
mod blocking;
mod header;
mod mirrors;
mod sansio;
