//! Facts that must stay in sync: the committed header is what the pinned cbindgen generates
//! from the source (rustls-ffi's `ensure-header-updated`), and its hand-written
//! `IMDS_CACHE_VERSION` is the crate's version.
//!
//! `IMDS_CACHE_BLESS=1 cargo test -p imds-cache-ffi --lib tests::header` (or `make header`)
//! rewrites the header instead of failing. Not under Miri: it reads and runs cbindgen over
//! files.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn committed() -> String {
    std::fs::read_to_string(root().join("include/imds_cache.h")).unwrap_or_default()
}

#[test]
#[cfg_attr(miri, ignore = "reads files")]
fn header_matches_the_source() {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let mut config = cbindgen::Config::from_file(Path::new(crate_dir).join("cbindgen.toml"))
        .expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n/* The library's version, as in Cargo.toml. */\n#define IMDS_CACHE_VERSION \"{}\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = root().join("include/imds_cache.h");
    if std::env::var_os("IMDS_CACHE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let current = committed();
    if current != generated {
        let line = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(generated.lines().count()));
        panic!(
            "include/imds_cache.h is out of date (first difference at line {}): run `make \
             header` and commit it",
            line + 1
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "reads files")]
fn version_macro_matches_cargo_toml() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    // The workspace's version, under [workspace.package].
    let section = manifest
        .split("[workspace.package]")
        .nth(1)
        .expect("[workspace.package]");
    let version = section
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "version").then(|| v.trim().trim_matches('"').to_string())
        })
        .expect("version in [workspace.package]");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let header = committed();
    let macro_line = format!("#define IMDS_CACHE_VERSION \"{version}\"");
    assert!(
        header.lines().any(|l| l == macro_line),
        "the header must contain `{macro_line}` (run `make header`)"
    );
    // And the function says the same.
    let mut buf = [0u8; 32];
    let mut n = 0;
    // SAFETY: a 32-byte buffer and a valid out-pointer.
    let r = unsafe { crate::imds_cache_version(buf.as_mut_ptr(), buf.len(), &mut n) };
    assert_eq!(r, crate::imds_cache_result::Ok);
    assert_eq!(&buf[..n], version.as_bytes());
}
