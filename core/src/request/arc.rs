//! Arc's challenge: the key-file path named by its `WWW-Authenticate` header, and the key
//! file's contents, both checked before they are used.

use core::fmt;

use super::is_visible;

/// The largest Arc key file accepted, in bytes (as every SDK enforces).
pub const ARC_MAX_KEY_LEN: usize = 4096;

/// The directory HIMDS writes its key files to on Linux.
pub const ARC_KEY_DIR_LINUX: &str = "/var/opt/azcmagent/tokens";

/// The directory HIMDS writes its key files to on Windows (`%ProgramData%` expanded to its
/// default value).
pub const ARC_KEY_DIR_WINDOWS: &str = r"C:\ProgramData\AzureConnectedMachineAgent\Tokens";

/// Why Arc's challenge or key file was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArcError {
    /// The `WWW-Authenticate` scheme is not `Basic`.
    NotBasic,
    /// The challenge is not `Basic realm=<path>` with exactly one `=` and balanced quotes.
    MalformedChallenge,
    /// The path contains a control character or NUL.
    ControlCharacter,
    /// The path is not absolute (`/…` or a drive path `C:\…`).
    RelativePath,
    /// The path has a `.` or `..` component.
    DotComponent,
    /// The file is not directly in the key directory.
    WrongDirectory,
    /// The file name does not end in `.key` or has an empty stem.
    NotAKeyFile,
    /// The key file is empty.
    EmptyKey,
    /// The key file is longer than 4096 bytes.
    KeyTooLong,
    /// The key contains a byte that is not visible ASCII (0x21–0x7E) besides one trailing newline.
    KeyNotPrintable,
}

impl ArcError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::NotBasic => "Arc challenge scheme is not Basic",
            Self::MalformedChallenge => "Arc challenge is not Basic realm=<path>",
            Self::ControlCharacter => "Arc key path contains a control character",
            Self::RelativePath => "Arc key path is not absolute",
            Self::DotComponent => "Arc key path has a . or .. component",
            Self::WrongDirectory => "Arc key file is not in the key directory",
            Self::NotAKeyFile => "Arc key file name does not end in .key",
            Self::EmptyKey => "Arc key file is empty",
            Self::KeyTooLong => "Arc key file is longer than 4096 bytes",
            Self::KeyNotPrintable => "Arc key contains a byte that is not visible ASCII",
        }
    }
}

impl fmt::Display for ArcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for ArcError {}

/// Whether `dir` is a Windows path: it starts with a drive (`C:`) or contains a `\`.
fn is_windows_dir(dir: &str) -> bool {
    let b = dir.as_bytes();
    (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':') || b.contains(&b'\\')
}

/// A path is absolute when it starts with `/` (Unix) or with a drive, `C:\` or `C:/`
/// (Windows). On Windows, UNC and drive-relative paths (`\\server\…`, `\dir`) are refused.
fn is_absolute(path: &str, windows: bool) -> bool {
    let b = path.as_bytes();
    if windows {
        b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && (b[2] == b'\\' || b[2] == b'/')
    } else {
        b.first() == Some(&b'/')
    }
}

/// The key-file path of Arc's challenge, checked against the key directory.
///
/// `www_authenticate` is the header value, `Basic realm=<path>`: the scheme is compared
/// without case, the value must hold exactly one `=` (the split point), spaces around the
/// parts are trimmed and one pair of surrounding double quotes is stripped. The path must be
/// absolute, free of control characters and of `.`/`..` components, name a file directly in
/// `key_dir` (the parent folder compared exactly, byte for byte; `/` and `\` both count as
/// separators, so [`ARC_KEY_DIR_WINDOWS`] works), and end in `.key` with a non-empty stem.
///
/// ```
/// use imds_cache::{arc_key_path, ARC_KEY_DIR_LINUX};
/// let p = arc_key_path("Basic realm=/var/opt/azcmagent/tokens/a1b2.key", ARC_KEY_DIR_LINUX);
/// assert_eq!(p, Ok("/var/opt/azcmagent/tokens/a1b2.key"));
/// ```
pub fn arc_key_path<'h>(www_authenticate: &'h str, key_dir: &str) -> Result<&'h str, ArcError> {
    let value = www_authenticate.trim_matches(' ');
    let (scheme, params) = value.split_once(' ').ok_or(ArcError::MalformedChallenge)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ArcError::NotBasic);
    }
    if params.bytes().filter(|&b| b == b'=').count() != 1 {
        return Err(ArcError::MalformedChallenge);
    }
    let (name, path) = params.split_once('=').ok_or(ArcError::MalformedChallenge)?;
    if !name.trim_matches(' ').eq_ignore_ascii_case("realm") {
        return Err(ArcError::MalformedChallenge);
    }
    let mut path = path.trim_matches(' ');
    if let Some(inner) = path.strip_prefix('"') {
        path = inner
            .strip_suffix('"')
            .ok_or(ArcError::MalformedChallenge)?;
    } else if path.ends_with('"') {
        return Err(ArcError::MalformedChallenge);
    }
    if path.is_empty() {
        return Err(ArcError::MalformedChallenge);
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(ArcError::ControlCharacter);
    }
    let windows = is_windows_dir(key_dir);
    let is_sep = |c: char| c == '/' || (windows && c == '\\');
    if !is_absolute(path, windows) {
        return Err(ArcError::RelativePath);
    }
    if path.split(is_sep).any(|c| c == "." || c == "..") {
        return Err(ArcError::DotComponent);
    }
    let dir = key_dir.strip_suffix(is_sep).unwrap_or(key_dir);
    let cut = path.rfind(is_sep).ok_or(ArcError::RelativePath)?;
    let (parent, file) = (&path[..cut], &path[cut + 1..]);
    if dir.is_empty() || parent != dir {
        return Err(ArcError::WrongDirectory);
    }
    // Unix: a `\` in a name is a plain character, but no key file has one. Windows: a `:`
    // would name an alternate data stream.
    if file.contains('\\') || (windows && file.contains(':')) {
        return Err(ArcError::NotAKeyFile);
    }
    match file.strip_suffix(".key") {
        Some(stem) if !stem.is_empty() => Ok(path),
        _ => Err(ArcError::NotAKeyFile),
    }
}

/// Checks the contents of Arc's key file and returns the key to send.
///
/// Empty or longer than [`ARC_MAX_KEY_LEN`] bytes is an error; one trailing `\n` or `\r\n` is
/// trimmed; what remains must be non-empty visible ASCII (0x21–0x7E), so that it cannot break
/// out of the `Authorization` header.
pub fn check_arc_key(contents: &[u8]) -> Result<&[u8], ArcError> {
    if contents.is_empty() {
        return Err(ArcError::EmptyKey);
    }
    if contents.len() > ARC_MAX_KEY_LEN {
        return Err(ArcError::KeyTooLong);
    }
    let key = contents
        .strip_suffix(b"\r\n")
        .or_else(|| contents.strip_suffix(b"\n"))
        .unwrap_or(contents);
    if key.is_empty() {
        return Err(ArcError::EmptyKey);
    }
    if !key.iter().all(is_visible) {
        return Err(ArcError::KeyNotPrintable);
    }
    Ok(key)
}
