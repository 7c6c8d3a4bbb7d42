//! Sets the SONAME of the C library (DESIGN.md D14): `make install` installs the cdylib as
//! `libimds_cache.so.0` with a `libimds_cache.so` link.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libimds_cache.so.0");
    }
}
