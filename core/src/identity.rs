//! Who a token is for: the managed identity and the resource (audience).
//!
//! Values are validated on construction, so every `Identity` and `Resource` that exists can be
//! written into a request line without further checks (no CR/LF, no NUL, bounded length).

use core::fmt;

/// Longest resource accepted (D2).
pub const MAX_RESOURCE_LEN: usize = 512;
/// Longest ARM resource id accepted (D2).
pub const MAX_RESOURCE_ID_LEN: usize = 512;
/// Length of a GUID in its canonical 8-4-4-4-12 text form.
pub const GUID_LEN: usize = 36;

/// How a user-assigned identity is selected, or that the system-assigned one is meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IdentityKind {
    /// The system-assigned identity (no selector on the wire).
    System = 0,
    /// A user-assigned identity chosen by its client (application) id, a GUID.
    ClientId = 1,
    /// A user-assigned identity chosen by its object (principal) id, a GUID.
    ObjectId = 2,
    /// A user-assigned identity chosen by its ARM resource id.
    ResourceId = 3,
}

impl IdentityKind {
    /// The kind for a stored discriminant, if it names one.
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::System,
            1 => Self::ClientId,
            2 => Self::ObjectId,
            3 => Self::ResourceId,
            _ => return None,
        })
    }
}

/// Why an identity selector was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// The value is empty.
    Empty,
    /// A client or object id is not a GUID (8-4-4-4-12 hexadecimal digits).
    NotAGuid,
    /// The ARM resource id is longer than 512 bytes.
    TooLong,
    /// The ARM resource id does not have the `/subscriptions/…/providers/…/…/name` shape.
    NotAResourceId,
    /// The value contains a control character, a space, CR/LF or NUL.
    ControlCharacter,
}

impl IdentityError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "identity selector is empty",
            Self::NotAGuid => "client or object id is not a GUID",
            Self::TooLong => "ARM resource id is longer than 512 bytes",
            Self::NotAResourceId => "not an ARM resource id (/subscriptions/…/providers/…)",
            Self::ControlCharacter => "identity selector contains a control character or space",
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for IdentityError {}

/// A managed identity: the system-assigned one, or a user-assigned one by a selector.
///
/// The selector text is kept as given (it is sent on the wire as given); comparisons and
/// cache keys ignore ASCII case (D3).
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    kind: IdentityKind,
    value: &'a str,
}

impl<'a> Identity<'a> {
    /// The system-assigned identity.
    pub const SYSTEM: Identity<'static> = Identity {
        kind: IdentityKind::System,
        value: "",
    };

    /// A user-assigned identity by client id.
    ///
    /// ```
    /// use imds_cache::Identity;
    /// assert!(Identity::client_id("fe83865b-495e-4ec7-9574-12b264882c9f").is_ok());
    /// assert!(Identity::client_id("not-a-guid").is_err());
    /// ```
    pub fn client_id(value: &'a str) -> Result<Self, IdentityError> {
        check_guid(value)?;
        Ok(Self {
            kind: IdentityKind::ClientId,
            value,
        })
    }

    /// A user-assigned identity by object (principal) id.
    pub fn object_id(value: &'a str) -> Result<Self, IdentityError> {
        check_guid(value)?;
        Ok(Self {
            kind: IdentityKind::ObjectId,
            value,
        })
    }

    /// A user-assigned identity by ARM resource id
    /// (`/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`).
    pub fn resource_id(value: &'a str) -> Result<Self, IdentityError> {
        check_resource_id(value)?;
        Ok(Self {
            kind: IdentityKind::ResourceId,
            value,
        })
    }

    /// An identity of the given kind; `value` is ignored for [`IdentityKind::System`].
    pub fn new(kind: IdentityKind, value: &'a str) -> Result<Self, IdentityError> {
        match kind {
            IdentityKind::System => Ok(Identity { kind, value: "" }),
            IdentityKind::ClientId => Self::client_id(value),
            IdentityKind::ObjectId => Self::object_id(value),
            IdentityKind::ResourceId => Self::resource_id(value),
        }
    }

    /// How this identity is selected.
    pub const fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The selector text as given (empty for the system-assigned identity).
    pub const fn value(&self) -> &'a str {
        self.value
    }
}

/// `system-assigned`, `client_id=…`, `object_id=…` or `resource_id=…`: how logs and error
/// messages name an identity (selectors are not secrets).
impl fmt::Display for Identity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind() {
            IdentityKind::System => return f.write_str("system-assigned"),
            IdentityKind::ClientId => "client_id",
            IdentityKind::ObjectId => "object_id",
            IdentityKind::ResourceId => "resource_id",
        };
        write!(f, "{kind}={}", self.value())
    }
}

impl PartialEq for Identity<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.value.eq_ignore_ascii_case(other.value)
    }
}

impl Eq for Identity<'_> {}

/// Whether `value` has a control character, a space or DEL. Branch-free over the bytes (no
/// early exit), so the compiler vectorises it: the C ABI checks every selector on every call.
fn has_invisible(value: &str) -> bool {
    value
        .bytes()
        .fold(false, |bad, b| bad | (b <= b' ') | (b == 0x7f))
}

fn check_visible(value: &str) -> Result<(), IdentityError> {
    if has_invisible(value) {
        return Err(IdentityError::ControlCharacter);
    }
    Ok(())
}

/// `8-4-4-4-12` hex digits: dashes in the four places and nowhere else, every other byte hex.
/// One uniform pass without early exits (see [`has_invisible`]).
fn is_guid(b: &[u8]) -> bool {
    let (chars_ok, dashes) = b.iter().fold((true, 0u32), |(ok, n), &c| {
        let dash = c == b'-';
        (ok & (dash | c.is_ascii_hexdigit()), n + u32::from(dash))
    });
    b.len() == GUID_LEN && chars_ok && dashes == 4 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
}

fn check_guid(value: &str) -> Result<(), IdentityError> {
    if is_guid(value.as_bytes()) {
        return Ok(());
    }
    // Not a GUID: say why, in the order empty, control character, shape.
    if value.is_empty() {
        return Err(IdentityError::Empty);
    }
    check_visible(value)?;
    Err(IdentityError::NotAGuid)
}

fn check_resource_id(value: &str) -> Result<(), IdentityError> {
    if value.is_empty() {
        return Err(IdentityError::Empty);
    }
    if value.len() > MAX_RESOURCE_ID_LEN {
        return Err(IdentityError::TooLong);
    }
    check_visible(value)?;
    if value
        .bytes()
        .any(|b| matches!(b, b'?' | b'#' | b'&' | b'%' | b'\\' | b'"'))
    {
        return Err(IdentityError::NotAResourceId);
    }
    // /subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}
    let mut parts = value.split('/');
    let shape = [
        Some("subscriptions"),
        None,
        Some("resourcegroups"),
        None,
        Some("providers"),
        None,
        None,
        None,
    ];
    if parts.next() != Some("") {
        return Err(IdentityError::NotAResourceId);
    }
    for expected in shape {
        match parts.next() {
            Some(p) if !p.is_empty() => {
                if let Some(word) = expected {
                    if !p.eq_ignore_ascii_case(word) {
                        return Err(IdentityError::NotAResourceId);
                    }
                }
            }
            _ => return Err(IdentityError::NotAResourceId),
        }
    }
    if parts.next().is_some() {
        return Err(IdentityError::NotAResourceId);
    }
    Ok(())
}

/// Why a resource or scope was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceError {
    /// The resource is empty (or the scope was only `/.default`).
    Empty,
    /// The resource is longer than 512 bytes.
    TooLong,
    /// The resource contains a control character, CR/LF, NUL or a space.
    ControlCharacter,
    /// No scope was given.
    NoScope,
    /// More than one scope was given; a managed-identity token has one audience.
    MultipleScopes,
}

impl ResourceError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "resource is empty",
            Self::TooLong => "resource is longer than 512 bytes",
            Self::ControlCharacter => "resource contains a control character or space",
            Self::NoScope => "no scope given",
            Self::MultipleScopes => "more than one scope given",
        }
    }
}

impl fmt::Display for ResourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for ResourceError {}

/// The resource (audience) a token is requested for, e.g. `https://management.azure.com`.
///
/// Compared byte for byte: case and a trailing slash change the token's `aud` (D3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource<'a>(&'a str);

impl<'a> Resource<'a> {
    /// A resource given as is.
    pub fn new(value: &'a str) -> Result<Self, ResourceError> {
        if value.is_empty() {
            return Err(ResourceError::Empty);
        }
        if value.len() > MAX_RESOURCE_LEN {
            return Err(ResourceError::TooLong);
        }
        if has_invisible(value) {
            return Err(ResourceError::ControlCharacter);
        }
        Ok(Self(value))
    }

    /// The resource for one scope: a trailing `/.default` is stripped, exactly once.
    ///
    /// ```
    /// use imds_cache::Resource;
    /// let r = Resource::from_scopes(&["https://management.azure.com/.default"]).unwrap();
    /// assert_eq!(r.as_str(), "https://management.azure.com");
    /// ```
    pub fn from_scopes(scopes: &[&'a str]) -> Result<Self, ResourceError> {
        match scopes {
            [] => Err(ResourceError::NoScope),
            [scope] => Self::new(scope.strip_suffix("/.default").unwrap_or(scope)),
            _ => Err(ResourceError::MultipleScopes),
        }
    }

    /// The resource text.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

/// The kind of managed-identity endpoint a request goes to; each has its own wire form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Flavour {
    /// The Instance Metadata Service on VMs and scale sets (`169.254.169.254`).
    Imds = 0,
    /// App Service / Functions / Container Apps, protocol 2019-08-01.
    AppService2019 = 1,
    /// The `MSI_ENDPOINT` + `MSI_SECRET` form of 2017-09-01 (App Service 2017, Azure ML).
    Msi2017 = 2,
    /// Azure Arc-enabled servers (HIMDS), with its key-file challenge.
    Arc = 3,
    /// Azure Cloud Shell (form POST).
    CloudShell = 4,
    /// Azure Service Fabric (HTTPS with a pinned thumbprint).
    ServiceFabric = 5,
    /// The retired VM extension at `localhost:50342` (chosen only explicitly).
    VmExtension = 6,
}

impl Flavour {
    /// Number of flavours (for per-flavour tables).
    pub const COUNT: usize = 7;

    /// Every flavour, in discriminant order.
    pub const ALL: [Flavour; Self::COUNT] = [
        Self::Imds,
        Self::AppService2019,
        Self::Msi2017,
        Self::Arc,
        Self::CloudShell,
        Self::ServiceFabric,
        Self::VmExtension,
    ];

    /// The flavour for a stored discriminant, if it names one.
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// The flavour's stable snake_case name (`imds`, `app_service_2019`, …), as logs, the
    /// Python `flavour=` argument and error messages spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Imds => "imds",
            Self::AppService2019 => "app_service_2019",
            Self::Msi2017 => "msi_2017",
            Self::Arc => "arc",
            Self::CloudShell => "cloud_shell",
            Self::ServiceFabric => "service_fabric",
            Self::VmExtension => "vm_extension",
        }
    }

    /// The flavour of a [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_named_by_their_selector() {
        let id = "11111111-2222-3333-4444-555555555555";
        assert_eq!(std::format!("{}", Identity::SYSTEM), "system-assigned");
        let named = std::format!("{}", Identity::client_id(id).unwrap());
        assert_eq!(named, std::format!("client_id={id}"));
        let named = std::format!("{}", Identity::object_id(id).unwrap());
        assert_eq!(named, std::format!("object_id={id}"));
    }

    #[test]
    fn flavour_names_are_unique_and_round_trip() {
        for (i, f) in Flavour::ALL.iter().enumerate() {
            assert_eq!(Flavour::from_name(f.name()), Some(*f));
            assert_eq!(*f as usize, i);
            assert!(f
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        assert_eq!(Flavour::from_name("IMDS"), None);
    }

    const RID: &str = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";

    #[test]
    fn guids() {
        let cases: &[(&str, Result<(), IdentityError>)] = &[
            ("fe83865b-495e-4ec7-9574-12b264882c9f", Ok(())),
            ("5E29463D-71DA-4FE0-8E69-999B57DB23B0", Ok(())),
            ("", Err(IdentityError::Empty)),
            (
                "fe83865b495e4ec7957412b264882c9f",
                Err(IdentityError::NotAGuid),
            ),
            (
                "fe83865b-495e-4ec7-9574-12b264882c9g",
                Err(IdentityError::NotAGuid),
            ),
            (
                "fe83865b-495e-4ec7-9574-12b264882c9f0",
                Err(IdentityError::NotAGuid),
            ),
            (
                "712eac09-e943-418c-9be6-9fd5c91078bl",
                Err(IdentityError::NotAGuid),
            ),
            (
                "fe83865b-495e-4ec7-9574\r12b264882c9f",
                Err(IdentityError::ControlCharacter),
            ),
            (
                "fe83865b-495e-4ec7-9574-12b264882c9\0",
                Err(IdentityError::ControlCharacter),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Identity::client_id(input).map(|_| ()), *want, "{input:?}");
            assert_eq!(Identity::object_id(input).map(|_| ()), *want, "{input:?}");
        }
    }

    /// The branch-free check against the plain definition, for every byte at every place of a
    /// GUID (and a dash moved or doubled, which keeps the count of hex digits).
    #[test]
    fn guid_check_matches_the_plain_definition() {
        let plain = |b: &[u8]| {
            b.len() == GUID_LEN
                && b.iter().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => *c == b'-',
                    _ => c.is_ascii_hexdigit(),
                })
        };
        let good = *b"fe83865b-495e-4ec7-9574-12b264882c9f";
        // Miri (≈ 150 s for all 9,216 cases) takes the edges of the byte classes only.
        let all: [u8; 256] = core::array::from_fn(|b| b as u8);
        let bytes: &[u8] = if cfg!(miri) {
            b"\0 -/09:@AFG`afg\x7f\x80\xff"
        } else {
            &all
        };
        let mut seen = [0usize; 2];
        for i in 0..GUID_LEN {
            for &c in bytes {
                let mut b = good;
                b[i] = c;
                assert_eq!(is_guid(&b), plain(&b), "{i} {c}");
                seen[usize::from(plain(&b))] += 1;
            }
        }
        assert!(seen[0] > 0 && seen[1] > 0);
        assert!(!is_guid(b"fe83865b-495e-4ec7-9574-12b264882c9"));
        assert!(!is_guid(b"fe83865b4-95e-4ec7-9574-12b264882c9f"));
    }

    #[test]
    fn resource_ids() {
        // 513 bytes: a valid shape with a long name.
        let long = "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/";
        let mut buf = [b'a'; 600];
        buf[..long.len()].copy_from_slice(long.as_bytes());
        let too_long = core::str::from_utf8(&buf[..513]).unwrap();
        let cases: &[(&str, Result<(), IdentityError>)] = &[
            (RID, Ok(())),
            ("/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/identities/x", Ok(())),
            ("", Err(IdentityError::Empty)),
            (too_long, Err(IdentityError::TooLong)),
            ("subscriptions/s/resourceGroups/r/providers/a/b/c", Err(IdentityError::NotAResourceId)),
            ("/subscriptions/s/resourceGroups/r/providers/a/b", Err(IdentityError::NotAResourceId)),
            ("/subscriptions/s/resourceGroups/r/providers/a/b/c/d", Err(IdentityError::NotAResourceId)),
            ("/subscriptions//resourceGroups/r/providers/a/b/c", Err(IdentityError::NotAResourceId)),
            ("/subscriptions/s/resourceGroups/r/providers/a/b/c?x=1", Err(IdentityError::NotAResourceId)),
            ("/subscriptions/s/resourceGroups/r/providers/a/b/c d", Err(IdentityError::ControlCharacter)),
            ("/subscriptions/s/resourceGroups/r/providers/a/b/c\n", Err(IdentityError::ControlCharacter)),
        ];
        for (input, want) in cases {
            assert_eq!(Identity::resource_id(input).map(|_| ()), *want, "{input:?}");
        }
    }

    #[test]
    fn identity_equality_ignores_case_but_not_kind() {
        let a = Identity::client_id("fe83865b-495e-4ec7-9574-12b264882c9f").unwrap();
        let b = Identity::client_id("FE83865B-495E-4EC7-9574-12B264882C9F").unwrap();
        let c = Identity::object_id("fe83865b-495e-4ec7-9574-12b264882c9f").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            b.value(),
            "FE83865B-495E-4EC7-9574-12B264882C9F",
            "kept as given"
        );
        assert_eq!(
            Identity::new(IdentityKind::System, "ignored").unwrap(),
            Identity::SYSTEM
        );
    }

    #[test]
    fn scopes_to_resource() {
        let cases: &[(&[&str], Result<&str, ResourceError>)] = &[
            (
                &["https://management.azure.com/.default"],
                Ok("https://management.azure.com"),
            ),
            (
                &["https://management.azure.com//.default"],
                Ok("https://management.azure.com/"),
            ),
            (&["https://vault.azure.net"], Ok("https://vault.azure.net")),
            (&["https://x/.default/.default"], Ok("https://x/.default")),
            (&["/.default"], Err(ResourceError::Empty)),
            (&[], Err(ResourceError::NoScope)),
            (&["a", "b"], Err(ResourceError::MultipleScopes)),
            (
                &["https://x\r\nHost: evil"],
                Err(ResourceError::ControlCharacter),
            ),
            (&["https://x\0"], Err(ResourceError::ControlCharacter)),
            (&["https://x y"], Err(ResourceError::ControlCharacter)),
        ];
        for (scopes, want) in cases {
            assert_eq!(
                Resource::from_scopes(scopes).map(|r| r.as_str()),
                *want,
                "{scopes:?}"
            );
        }
        let mut big = [b'a'; 513];
        big[..8].copy_from_slice(b"https://");
        let s = core::str::from_utf8(&big).unwrap();
        assert_eq!(Resource::new(s), Err(ResourceError::TooLong));
        assert!(Resource::new(&s[..512]).is_ok());
    }
}
