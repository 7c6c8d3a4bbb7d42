//! The ARM `identity` property of a resource: which managed identities it grants (§7).
//!
//! [`parse_arm_identity`] reads the JSON value of a resource's `identity` property, in the
//! current dictionary form (`userAssignedIdentities`) or the old array form (`identityIds`),
//! into a caller-sized slice of [`UserAssigned`] entries, without allocating.
//!
//! ```
//! use imds_cache::{parse_arm_identity, UserAssigned};
//! let json = br#"{"type":"SystemAssigned, UserAssigned","userAssignedIdentities":{
//!   "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a":{}}}"#;
//! let mut scratch = [0u8; 0];
//! let mut out = [UserAssigned::EMPTY; 4];
//! let got = parse_arm_identity(json, &mut scratch, &mut out).unwrap();
//! assert!(got.system);
//! assert_eq!(got.user_assigned, 1);
//! assert!(out[0].resource_id.ends_with("/a"));
//! ```

use core::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::identity::{Identity, IdentityError};

/// Deepest nesting of JSON arrays and objects accepted (the property itself counts as 1).
pub const ARM_MAX_DEPTH: usize = 32;

/// A user-assigned identity granted by the `identity` property.
///
/// `resource_id` is a valid ARM resource id, and `client_id`/`principal_id` valid GUIDs, when
/// the entry comes from [`parse_arm_identity`]. Strings borrow from the JSON, or from the
/// scratch buffer when they held JSON escapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserAssigned<'a> {
    /// The identity's ARM resource id, as written (escapes decoded).
    pub resource_id: &'a str,
    /// Its client (application) id, when the property lists it (ARM responses do).
    pub client_id: Option<&'a str>,
    /// Its principal (object) id, when the property lists it (ARM responses do).
    pub principal_id: Option<&'a str>,
}

impl<'a> UserAssigned<'a> {
    /// An empty entry, to initialise output arrays (`[UserAssigned::EMPTY; N]`).
    pub const EMPTY: UserAssigned<'static> = UserAssigned {
        resource_id: "",
        client_id: None,
        principal_id: None,
    };

    /// The identity, selected by its resource id.
    ///
    /// Cannot fail for an entry written by [`parse_arm_identity`]; the fields are public, so
    /// an entry built by hand (or [`UserAssigned::EMPTY`]) is checked again here.
    pub fn identity(&self) -> Result<Identity<'a>, IdentityError> {
        Identity::resource_id(self.resource_id)
    }
}

/// What the `identity` property grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmIdentities {
    /// Whether the system-assigned identity is enabled.
    pub system: bool,
    /// The number of user-assigned identities written to the front of `out`.
    pub user_assigned: usize,
}

/// Why an `identity` property was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArmError {
    /// The input is not valid JSON (RFC 8259), or a known field has a value of the wrong type.
    Malformed,
    /// Arrays and objects are nested deeper than [`ARM_MAX_DEPTH`].
    TooDeep,
    /// The property has no `type`.
    MissingType,
    /// `type` is not `None`, `SystemAssigned`, `UserAssigned` or `SystemAssigned, UserAssigned`.
    UnknownType,
    /// A field (`type`, `userAssignedIdentities`, `identityIds`, `clientId`, `principalId`) appears twice.
    DuplicateField,
    /// The same resource id (ignoring ASCII case) is listed twice.
    DuplicateIdentity,
    /// User-assigned identities are listed but `type` does not include `UserAssigned`.
    UserAssignedNotInType,
    /// A listed resource id is not an ARM resource id.
    InvalidResourceId(IdentityError),
    /// A `clientId` is not a GUID.
    InvalidClientId(IdentityError),
    /// A `principalId` of a user-assigned identity is not a GUID.
    InvalidPrincipalId(IdentityError),
    /// The scratch buffer is too short for the strings with escapes (one of `json.len()` bytes always suffices).
    ScratchTooSmall,
    /// More user-assigned identities are listed than `out` holds; `needed` counts them all.
    TooMany {
        /// The number of listed (non-null) user-assigned identities.
        needed: usize,
    },
}

impl ArmError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "identity property is not JSON of the expected shape",
            Self::TooDeep => "identity property is nested too deeply",
            Self::MissingType => "identity property has no type",
            Self::UnknownType => "identity type is not None, SystemAssigned and/or UserAssigned",
            Self::DuplicateField => "a field of the identity property appears twice",
            Self::DuplicateIdentity => "a user-assigned identity is listed twice",
            Self::UserAssignedNotInType => {
                "user-assigned identities listed but type excludes UserAssigned"
            }
            Self::InvalidResourceId(_) => "user-assigned identity has an invalid resource id",
            Self::InvalidClientId(_) => "user-assigned identity has an invalid clientId",
            Self::InvalidPrincipalId(_) => "user-assigned identity has an invalid principalId",
            Self::ScratchTooSmall => "scratch buffer too small to unescape the identity property",
            Self::TooMany { .. } => "more user-assigned identities than the output holds",
        }
    }
}

impl fmt::Display for ArmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidResourceId(e) | Self::InvalidClientId(e) | Self::InvalidPrincipalId(e) => {
                write!(f, "{}: {}", self.as_str(), e)
            }
            Self::TooMany { needed } => write!(f, "{} ({needed} needed)", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

impl core::error::Error for ArmError {}

/// Parses the JSON value of a resource's `identity` property.
///
/// Both forms are read: the dictionary `userAssignedIdentities` (values `{}`,
/// `{"principalId":…,"clientId":…}`, or `null`) and the old array `identityIds` (resource id
/// strings); when both are present their union is granted. `type` is `None`,
/// `SystemAssigned`, `UserAssigned` or `SystemAssigned,UserAssigned` (any ASCII case, spaces
/// around the comma allowed); `None` grants nothing. The property-level `principalId` and
/// `tenantId` and unknown fields are skipped, whatever their value. Field names compare
/// without ASCII case.
///
/// Decisions:
/// * a `null` dictionary value means the identity is being removed: it is not granted, not
///   counted, and may not name an identity also listed with a value
///   ([`ArmError::DuplicateIdentity`]); its resource id is still validated;
/// * a `type` with `UserAssigned` and no identity listed (or only `null` ones) is accepted
///   and grants no user-assigned identity — the list is authoritative, and a PATCH that
///   removes the last one has this shape;
/// * identities listed with a value under a `type` without `UserAssigned` (including `None`)
///   are an error, [`ArmError::UserAssignedNotInType`], as ARM itself refuses that shape;
/// * the same resource id twice (ignoring ASCII case, D3), in one form or across both, is
///   [`ArmError::DuplicateIdentity`].
///
/// Every resource id is validated with [`Identity::resource_id`] and every user-assigned
/// `clientId`/`principalId` as a GUID. Strings without a backslash borrow from `json`; strings
/// with escapes are decoded into `scratch`, which never needs more than `json.len()` bytes.
///
/// Output: the granted identities in the order listed, in `out[..user_assigned]`. When more
/// are listed than `out` holds, parsing and validation go on to the end and the answer is
/// [`ArmError::TooMany`] whose `needed` is the exact count of listed non-null identities (two
/// duplicates past the end of `out` are each counted; a retry with that many entries then
/// reports the duplicate). `out[user_assigned..]` and, after an error, all of `out` hold
/// unspecified entries.
pub fn parse_arm_identity<'a>(
    json: &'a [u8],
    scratch: &'a mut [u8],
    out: &mut [UserAssigned<'a>],
) -> Result<ArmIdentities, ArmError> {
    check_json(json)?;
    let mut state = State {
        scratch,
        out,
        stored: 0,
        listed: 0,
        overflow: false,
        removals: false,
        check_removals: false,
        kind: None,
        seen_uai: false,
        seen_ids: false,
        error: None,
    };
    state.run(json)?;
    let kind = state.kind.ok_or(ArmError::MissingType)?;
    if state.listed > 0 && !kind.user {
        return Err(ArmError::UserAssignedNotInType);
    }
    if state.overflow {
        return Err(ArmError::TooMany {
            needed: state.listed,
        });
    }
    if state.removals && state.stored > 0 {
        state.check_removals = true;
        state.run(json)?;
    }
    Ok(ArmIdentities {
        system: kind.system,
        user_assigned: state.stored,
    })
}

/// Checks `json` strictly before the lenient recursive parser sees it.
fn check_json(json: &[u8]) -> Result<(), ArmError> {
    crate::json::check(json, ARM_MAX_DEPTH).map_err(|e| match e {
        crate::json::JsonError::TooDeep => ArmError::TooDeep,
        crate::json::JsonError::Malformed => ArmError::Malformed,
    })
}

/// The flags of a `type` value.
#[derive(Clone, Copy)]
struct Kind {
    system: bool,
    user: bool,
}

fn parse_type(raw: &str) -> Result<Kind, ArmError> {
    let mut buf = [0u8; 64];
    let n = unescape_into(raw, &mut buf).map_err(|e| match e {
        Unescape::Invalid => ArmError::Malformed,
        Unescape::NoRoom => ArmError::UnknownType,
    })?;
    let s = core::str::from_utf8(&buf[..n]).map_err(|_| ArmError::Malformed)?;
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let (system, user) = if is(s, "None") {
        (false, false)
    } else if is(s, "SystemAssigned") {
        (true, false)
    } else if is(s, "UserAssigned") {
        (false, true)
    } else {
        match s.split_once(',') {
            Some((a, b))
                if is(a.trim_end_matches(' '), "SystemAssigned")
                    && is(b.trim_start_matches(' '), "UserAssigned") =>
            {
                (true, true)
            }
            _ => return Err(ArmError::UnknownType),
        }
    };
    Ok(Kind { system, user })
}

enum Unescape {
    Invalid,
    NoRoom,
}

/// Decodes the JSON escapes of a raw string body, one `char` at a time (surrogate pairs joined).
struct Chars<'s>(core::str::Chars<'s>);

impl Chars<'_> {
    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + self.0.next()?.to_digit(16)?;
        }
        Some(v)
    }
}

impl Iterator for Chars<'_> {
    type Item = Result<char, Unescape>;

    fn next(&mut self) -> Option<Self::Item> {
        let c = self.0.next()?;
        if c != '\\' {
            return Some(Ok(c));
        }
        let decoded = match self.0.next() {
            Some('"') => Some('"'),
            Some('\\') => Some('\\'),
            Some('/') => Some('/'),
            Some('b') => Some('\u{8}'),
            Some('f') => Some('\u{c}'),
            Some('n') => Some('\n'),
            Some('r') => Some('\r'),
            Some('t') => Some('\t'),
            Some('u') => match self.hex4() {
                Some(hi @ 0xd800..=0xdbff) => {
                    if self.0.next() == Some('\\') && self.0.next() == Some('u') {
                        match self.hex4() {
                            Some(lo @ 0xdc00..=0xdfff) => {
                                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                            }
                            _ => None,
                        }
                    } else {
                        None
                    }
                }
                Some(v) => char::from_u32(v),
                None => None,
            },
            _ => None,
        };
        Some(decoded.ok_or(Unescape::Invalid))
    }
}

/// Decodes `raw` into `buf`, answering the length written. Never longer than `raw`.
fn unescape_into(raw: &str, buf: &mut [u8]) -> Result<usize, Unescape> {
    let mut n = 0;
    for c in Chars(raw.chars()) {
        let c = c?;
        let len = c.len_utf8();
        let dst = buf.get_mut(n..n + len).ok_or(Unescape::NoRoom)?;
        c.encode_utf8(dst);
        n += len;
    }
    Ok(n)
}

/// Whether the raw (escaped) `raw` decodes to `plain`, ignoring ASCII case.
fn raw_eq_ignore_case(raw: &str, plain: &str) -> Result<bool, ArmError> {
    let mut b = plain.chars();
    for a in Chars(raw.chars()) {
        let a = a.map_err(|_| ArmError::Malformed)?;
        match b.next() {
            Some(b) if a.eq_ignore_ascii_case(&b) => {}
            _ => return Ok(false),
        }
    }
    Ok(b.next().is_none())
}

/// Whether the raw key `raw` names the field `name` (escapes decoded, ASCII case ignored).
fn key_is(raw: &str, name: &str) -> bool {
    raw_eq_ignore_case(raw, name).unwrap_or(false)
}

/// A user-assigned entry as read, before validation: raw (escaped) strings.
struct RawEntry<'a> {
    client_id: Option<&'a str>,
    principal_id: Option<&'a str>,
}

struct State<'a, 'o> {
    scratch: &'a mut [u8],
    out: &'o mut [UserAssigned<'a>],
    stored: usize,
    /// Entries listed with a value (granted), counted even when `out` is full.
    listed: usize,
    overflow: bool,
    /// A `null` entry was seen: the second pass checks those against the stored entries.
    removals: bool,
    /// Second pass: only compare `null` entries with the stored ones.
    check_removals: bool,
    kind: Option<Kind>,
    seen_uai: bool,
    seen_ids: bool,
    /// The typed error behind a serde error raised from inside a visitor.
    error: Option<ArmError>,
}

impl<'a> State<'a, '_> {
    fn run(&mut self, json: &'a [u8]) -> Result<(), ArmError> {
        let mut de = serde_json_core::de::Deserializer::new(json, None);
        let result = Root(self).deserialize(&mut de).and_then(|()| de.end());
        match (result, self.error.take()) {
            (_, Some(e)) => Err(e),
            (Ok(_), None) => Ok(()),
            (Err(_), None) => Err(ArmError::Malformed),
        }
    }

    /// Records `e` and answers the serde error that unwinds the parse.
    fn fail<E: de::Error>(&mut self, e: ArmError) -> E {
        if self.error.is_none() {
            self.error = Some(e);
        }
        E::custom("identity property refused")
    }

    /// The decoded string: `raw` itself without escapes, else decoded into the scratch buffer.
    fn materialize(&mut self, raw: &'a str) -> Result<&'a str, ArmError> {
        if !raw.contains('\\') {
            return Ok(raw);
        }
        let buf = core::mem::take(&mut self.scratch);
        let n = match unescape_into(raw, buf) {
            Ok(n) => n,
            Err(e) => {
                self.scratch = buf;
                return Err(match e {
                    Unescape::Invalid => ArmError::Malformed,
                    Unescape::NoRoom => ArmError::ScratchTooSmall,
                });
            }
        };
        let (head, tail) = buf
            .split_at_mut_checked(n)
            .ok_or(ArmError::ScratchTooSmall)?;
        self.scratch = tail;
        let head: &'a [u8] = head;
        core::str::from_utf8(head).map_err(|_| ArmError::Malformed)
    }

    /// One listed identity: `entry` is `None` for a `null` dictionary value.
    fn entry(&mut self, raw_id: &'a str, entry: Option<RawEntry<'a>>) -> Result<(), ArmError> {
        if self.check_removals {
            if entry.is_none() {
                for stored in self.out.iter().take(self.stored) {
                    if raw_eq_ignore_case(raw_id, stored.resource_id)? {
                        return Err(ArmError::DuplicateIdentity);
                    }
                }
            }
            return Ok(());
        }
        let resource_id = self.materialize(raw_id)?;
        Identity::resource_id(resource_id).map_err(ArmError::InvalidResourceId)?;
        let Some(entry) = entry else {
            self.removals = true;
            return Ok(());
        };
        let client_id = match entry.client_id {
            Some(raw) => {
                let s = self.materialize(raw)?;
                Identity::client_id(s).map_err(ArmError::InvalidClientId)?;
                Some(s)
            }
            None => None,
        };
        let principal_id = match entry.principal_id {
            Some(raw) => {
                let s = self.materialize(raw)?;
                Identity::object_id(s).map_err(ArmError::InvalidPrincipalId)?;
                Some(s)
            }
            None => None,
        };
        self.listed += 1;
        if self.overflow {
            return Ok(());
        }
        let stored = self.out.get(..self.stored).unwrap_or(&[]);
        if stored
            .iter()
            .any(|u| u.resource_id.eq_ignore_ascii_case(resource_id))
        {
            return Err(ArmError::DuplicateIdentity);
        }
        match self.out.get_mut(self.stored) {
            Some(slot) => {
                *slot = UserAssigned {
                    resource_id,
                    client_id,
                    principal_id,
                };
                self.stored += 1;
            }
            None => self.overflow = true,
        }
        Ok(())
    }
}

/// The `identity` object.
struct Root<'s, 'a, 'o>(&'s mut State<'a, 'o>);

impl<'a> DeserializeSeed<'a> for Root<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for Root<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an identity object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let st = self.0;
        while let Some(key) = map.next_key::<&'a str>()? {
            if key_is(key, "type") {
                let raw: &'a str = map.next_value()?;
                if st.check_removals {
                    continue;
                }
                if st.kind.is_some() {
                    return Err(st.fail(ArmError::DuplicateField));
                }
                match parse_type(raw) {
                    Ok(kind) => st.kind = Some(kind),
                    Err(e) => return Err(st.fail(e)),
                }
            } else if key_is(key, "userAssignedIdentities") {
                if st.seen_uai && !st.check_removals {
                    return Err(st.fail(ArmError::DuplicateField));
                }
                st.seen_uai = true;
                map.next_value_seed(Nullable(Dictionary(&mut *st)))?;
            } else if key_is(key, "identityIds") {
                if st.seen_ids && !st.check_removals {
                    return Err(st.fail(ArmError::DuplicateField));
                }
                st.seen_ids = true;
                map.next_value_seed(Nullable(IdList(&mut *st)))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A value that may be `null` (then nothing happens).
struct Nullable<T>(T);

impl<'a, T: DeserializeSeed<'a, Value = ()>> DeserializeSeed<'a> for Nullable<T> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'a, T: DeserializeSeed<'a, Value = ()>> Visitor<'a> for Nullable<T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

/// `userAssignedIdentities`: resource id → `{…}` or `null`.
struct Dictionary<'s, 'a, 'o>(&'s mut State<'a, 'o>);

impl<'a> DeserializeSeed<'a> for Dictionary<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for Dictionary<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of user-assigned identities")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let st = self.0;
        while let Some(id) = map.next_key::<&'a str>()? {
            let entry = map.next_value_seed(EntrySeed(&mut *st))?;
            if let Err(e) = st.entry(id, entry) {
                return Err(st.fail(e));
            }
        }
        Ok(())
    }
}

/// One dictionary value: `null` or an object with optional `clientId` / `principalId`.
struct EntrySeed<'s, 'a, 'o>(&'s mut State<'a, 'o>);

impl<'a> DeserializeSeed<'a> for EntrySeed<'_, 'a, '_> {
    type Value = Option<RawEntry<'a>>;

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'a> Visitor<'a> for EntrySeed<'_, 'a, '_> {
    type Value = Option<RawEntry<'a>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an identity object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'a>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(EntryFields(self.0)).map(Some)
    }
}

struct EntryFields<'s, 'a, 'o>(&'s mut State<'a, 'o>);

impl<'a> Visitor<'a> for EntryFields<'_, 'a, '_> {
    type Value = RawEntry<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an identity object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<RawEntry<'a>, A::Error> {
        let mut entry = RawEntry {
            client_id: None,
            principal_id: None,
        };
        let (mut seen_client, mut seen_principal) = (false, false);
        while let Some(key) = map.next_key::<&'a str>()? {
            let (slot, seen) = if key_is(key, "clientId") {
                (&mut entry.client_id, &mut seen_client)
            } else if key_is(key, "principalId") {
                (&mut entry.principal_id, &mut seen_principal)
            } else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if *seen {
                return Err(self.0.fail(ArmError::DuplicateField));
            }
            *seen = true;
            *slot = map.next_value::<Option<&'a str>>()?;
        }
        Ok(entry)
    }
}

/// `identityIds`: an array of resource ids.
struct IdList<'s, 'a, 'o>(&'s mut State<'a, 'o>);

impl<'a> DeserializeSeed<'a> for IdList<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for IdList<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of resource ids")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        let st = self.0;
        while let Some(id) = seq.next_element::<&'a str>()? {
            let entry = RawEntry {
                client_id: None,
                principal_id: None,
            };
            if let Err(e) = st.entry(id, Some(entry)) {
                return Err(st.fail(e));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKind;
    use std::{format, string::String, vec, vec::Vec};

    const CID: &str = "fe83865b-495e-4ec7-9574-12b264882c9f";
    const PID: &str = "5e29463d-71da-4fe0-8e69-999b57db23b0";
    const R1: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a";
    const R2: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b";
    const R3: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/c";

    /// Parses with generous buffers; answers (system, [(resource id, client, principal)]).
    type Owned = (bool, Vec<(String, Option<String>, Option<String>)>);

    fn parse_n(json: &str, n: usize) -> Result<Owned, ArmError> {
        let mut scratch = vec![0u8; json.len()];
        let mut out = vec![UserAssigned::EMPTY; n];
        let got = parse_arm_identity(json.as_bytes(), &mut scratch, &mut out)?;
        let list = out[..got.user_assigned]
            .iter()
            .map(|u| {
                (
                    u.resource_id.into(),
                    u.client_id.map(String::from),
                    u.principal_id.map(String::from),
                )
            })
            .collect();
        Ok((got.system, list))
    }

    fn parse(json: &str) -> Result<Owned, ArmError> {
        parse_n(json, 8)
    }

    /// (system, resource ids) or the error.
    type Ids = Result<(bool, Vec<String>), ArmError>;
    /// (system, user-assigned allowed).
    type Flags = (bool, bool);

    fn ids(json: &str) -> Ids {
        parse(json).map(|(s, l)| (s, l.into_iter().map(|e| e.0).collect()))
    }

    #[test]
    fn dictionary_form_from_the_protocol_reference() {
        // §7 verbatim: its placeholders are not GUIDs, and the first one checked is refused.
        let verbatim = r#"{
    "type": "SystemAssigned, UserAssigned",
    "principalId": "<guid, read-only, system identity>",
    "tenantId": "<guid, read-only>",
    "userAssignedIdentities": {
      "/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>": {
        "principalId": "<guid, read-only>",
        "clientId": "<guid, read-only>"
      }
    }
  }"#;
        assert_eq!(
            parse(verbatim),
            Err(ArmError::InvalidClientId(IdentityError::ControlCharacter))
        );
        let filled = verbatim
            .replace("<guid, read-only, system identity>", PID)
            .replace(
                "<guid, read-only>\",\n        \"clientId\": \"<guid, read-only>",
                &format!("{PID}\",\n        \"clientId\": \"{CID}"),
            )
            .replace("<guid, read-only>", "72f988bf-86f1-41af-91ab-2d7cd011db47")
            .replace("<sub>", "0000")
            .replace("<rg>", "rg")
            .replace("<name>", "id1");
        let rid = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
        assert_eq!(
            parse(&filled),
            Ok((true, vec![(rid.into(), Some(CID.into()), Some(PID.into()))]))
        );
        // Request form: the values are `{}`.
        let request = format!(
            r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{}},"{R2}":{{}}}}}}"#
        );
        assert_eq!(ids(&request), Ok((false, vec![R1.into(), R2.into()])));
    }

    #[test]
    fn array_form() {
        let old =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/identities/old";
        let json = format!(
            r#"{{"type": "SystemAssigned, UserAssigned", "identityIds": ["{old}", "{R1}"], "principalId": "{PID}", "tenantId": "{PID}"}}"#
        );
        assert_eq!(ids(&json), Ok((true, vec![old.into(), R1.into()])));
        assert_eq!(
            ids(r#"{"type":"UserAssigned","identityIds":[]}"#),
            Ok((false, vec![]))
        );
        assert_eq!(
            ids(r#"{"type":"UserAssigned","identityIds":null}"#),
            Ok((false, vec![]))
        );
        // Both forms: the union, in order.
        let both = format!(
            r#"{{"type":"UserAssigned","identityIds":["{R1}"],"userAssignedIdentities":{{"{R2}":{{}}}}}}"#
        );
        assert_eq!(ids(&both), Ok((false, vec![R1.into(), R2.into()])));
        let dup = format!(
            r#"{{"type":"UserAssigned","identityIds":["{R1}"],"userAssignedIdentities":{{"{R1}":{{}}}}}}"#
        );
        assert_eq!(ids(&dup), Err(ArmError::DuplicateIdentity));
        let dup = format!(
            r#"{{"type":"UserAssigned","identityIds":["{R1}","{}"]}}"#,
            R1.to_uppercase()
        );
        assert_eq!(ids(&dup), Err(ArmError::DuplicateIdentity));
    }

    #[test]
    fn type_spellings() {
        // (type, system, user-assigned allowed)
        #[rustfmt::skip]
        let cases: &[(&str, Result<Flags, ArmError>)] = &[
            ("None", Ok((false, false))),
            ("none", Ok((false, false))),
            ("SystemAssigned", Ok((true, false))),
            ("systemassigned", Ok((true, false))),
            ("UserAssigned", Ok((false, true))),
            ("userAssigned", Ok((false, true))),
            ("USERASSIGNED", Ok((false, true))),
            ("SystemAssigned, UserAssigned", Ok((true, true))),
            ("SystemAssigned,UserAssigned", Ok((true, true))),
            ("systemAssigned ,  userassigned", Ok((true, true))),
            ("System\\u0041ssigned", Ok((true, false))),
            ("", Err(ArmError::UnknownType)),
            (" None", Err(ArmError::UnknownType)),
            ("None ", Err(ArmError::UnknownType)),
            ("UserAssigned, SystemAssigned", Err(ArmError::UnknownType)),
            ("SystemAssigned,", Err(ArmError::UnknownType)),
            ("SystemAssigned, UserAssigned, None", Err(ArmError::UnknownType)),
            ("SystemAssigned;UserAssigned", Err(ArmError::UnknownType)),
            ("Both", Err(ArmError::UnknownType)),
            ("SystemAssigned\\u0000", Err(ArmError::UnknownType)),
            ("SystemAssigned,\\tUserAssigned", Err(ArmError::UnknownType)),
            ("\\x", Err(ArmError::Malformed)),
        ];
        for (ty, want) in cases {
            let plain = format!(r#"{{"type":"{ty}"}}"#);
            let with_user =
                format!(r#"{{"type":"{ty}","userAssignedIdentities":{{"{R1}":{{}}}}}}"#);
            match want {
                Ok((system, user)) => {
                    assert_eq!(ids(&plain), Ok((*system, vec![])), "{ty:?}");
                    let want_user = if *user {
                        Ok((*system, vec![String::from(R1)]))
                    } else {
                        Err(ArmError::UserAssignedNotInType)
                    };
                    assert_eq!(ids(&with_user), want_user, "{ty:?}");
                }
                Err(e) => {
                    assert_eq!(ids(&plain), Err(*e), "{ty:?}");
                    assert_eq!(ids(&with_user), Err(*e), "{ty:?}");
                }
            }
        }
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(100));
        assert_eq!(ids(&long), Err(ArmError::UnknownType));
    }

    #[test]
    fn null_values_remove() {
        #[rustfmt::skip]
        let cases: &[(String, Ids)] = &[
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null,"{R2}":{{}}}}}}"#), Ok((false, vec![R2.into()]))),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null}}}}"#), Ok((false, vec![]))),
            (format!(r#"{{"type":"None","userAssignedIdentities":{{"{R1}":null}}}}"#), Ok((false, vec![]))),
            (format!(r#"{{"type":"SystemAssigned","userAssignedIdentities":{{"{R1}":null}}}}"#), Ok((true, vec![]))),
            (String::from(r#"{"type":"UserAssigned","userAssignedIdentities":null}"#), Ok((false, vec![]))),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{}},"{R1}":null}}}}"#), Err(ArmError::DuplicateIdentity)),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null,"{R2}":{{}},"{}":{{}}}}}}"#, R1.to_uppercase()), Err(ArmError::DuplicateIdentity)),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null,"{R1}":null,"{R2}":{{}}}}}}"#), Ok((false, vec![R2.into()]))),
            (String::from(r#"{"type":"UserAssigned","userAssignedIdentities":{"/bad":null}}"#), Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":null,"principalId":null}}}}}}"#), Ok((false, vec![R1.into()]))),
        ];
        for (json, want) in cases {
            assert_eq!(ids(json), *want, "{json}");
        }
        // A removal written with escapes still matches the granted id.
        let esc = R1.replace('/', "\\/");
        let json = format!(
            r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{esc}":null,"{R1}":{{}}}}}}"#
        );
        assert_eq!(ids(&json), Err(ArmError::DuplicateIdentity));
    }

    #[test]
    fn user_assigned_type_and_list_disagree() {
        #[rustfmt::skip]
        let cases: &[(String, Ids)] = &[
            (String::from(r#"{"type":"UserAssigned"}"#), Ok((false, vec![]))),
            (String::from(r#"{"type":"SystemAssigned, UserAssigned","userAssignedIdentities":{}}"#), Ok((true, vec![]))),
            (format!(r#"{{"type":"SystemAssigned","userAssignedIdentities":{{"{R1}":{{}}}}}}"#), Err(ArmError::UserAssignedNotInType)),
            (format!(r#"{{"type":"None","identityIds":["{R1}"]}}"#), Err(ArmError::UserAssignedNotInType)),
            (format!(r#"{{"identityIds":["{R1}"],"type":"None"}}"#), Err(ArmError::UserAssignedNotInType)),
            (String::from(r#"{"type":"None","userAssignedIdentities":{}}"#), Ok((false, vec![]))),
        ];
        for (json, want) in cases {
            assert_eq!(ids(json), *want, "{json}");
        }
    }

    #[test]
    fn escapes_are_decoded_into_scratch() {
        let esc = R1.replace('/', "\\/");
        let cid_esc = CID.replacen('f', "\\u0066", 1);
        let json = format!(
            r#"{{"typ\u0065":"UserAssigned","userAssignedIdentities":{{"{esc}":{{"clientId":"{cid_esc}","principalId":"{PID}"}},"{R2}":{{}}}}}}"#
        );
        let mut scratch = vec![0u8; json.len()];
        let mut out = [UserAssigned::EMPTY; 4];
        let got = parse_arm_identity(json.as_bytes(), &mut scratch, &mut out).unwrap();
        assert_eq!(
            got,
            ArmIdentities {
                system: false,
                user_assigned: 2
            }
        );
        assert_eq!(out[0].resource_id, R1);
        assert_eq!(out[0].client_id, Some(CID));
        assert_eq!(out[0].principal_id, Some(PID));
        assert_eq!(out[1].resource_id, R2);
        // Strings without escapes borrow from the JSON itself.
        let range = json.as_bytes().as_ptr_range();
        assert!(range.contains(&out[1].resource_id.as_ptr()));
        assert!(range.contains(&out[0].principal_id.unwrap().as_ptr()));
        assert!(!range.contains(&out[0].resource_id.as_ptr()));

        // The exact scratch needed is the decoded length of the escaped strings.
        let needed = R1.len() + CID.len();
        for size in [0, 1, R1.len(), needed - 1] {
            let mut scratch = vec![0u8; size];
            let mut out = [UserAssigned::EMPTY; 4];
            assert_eq!(
                parse_arm_identity(json.as_bytes(), &mut scratch, &mut out),
                Err(ArmError::ScratchTooSmall),
                "{size}"
            );
        }
        let mut scratch = vec![0u8; needed];
        let mut out = [UserAssigned::EMPTY; 4];
        assert!(parse_arm_identity(json.as_bytes(), &mut scratch, &mut out).is_ok());

        // Escaped field names, surrogate pairs, and bad escapes.
        #[rustfmt::skip]
        let cases: &[(String, Ids)] = &[
            (format!(r#"{{"\u0074ype":"UserAssigned","identity\u0049ds":["{esc}"]}}"#), Ok((false, vec![R1.into()]))),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\ud83d\ude00"]}}"#), Ok((false, vec![format!("{R1}\u{1f600}")]))),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\ud83d"]}}"#), Err(ArmError::Malformed)),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\ude00"]}}"#), Err(ArmError::Malformed)),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\x"]}}"#), Err(ArmError::Malformed)),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\u00"]}}"#), Err(ArmError::Malformed)),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\n"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::ControlCharacter))),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\u0000"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::ControlCharacter))),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\\x"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\"x"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))),
        ];
        for (json, want) in cases {
            assert_eq!(ids(json), *want, "{json}");
        }
    }

    #[test]
    fn too_many() {
        let json = format!(
            r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{}},"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/gone":null,"{R2}":{{}},"{R3}":{{"clientId":"{CID}"}}}}}}"#
        );
        for n in 0..3 {
            assert_eq!(
                parse_n(&json, n),
                Err(ArmError::TooMany { needed: 3 }),
                "{n}"
            );
        }
        assert_eq!(parse_n(&json, 3).map(|(_, l)| l.len()), Ok(3));
        // Validation goes on past the end of `out`, and a type error comes first.
        let bad = format!(r#"{{"type":"UserAssigned","identityIds":["{R1}","{R2}","/nope"]}}"#);
        assert_eq!(
            parse_n(&bad, 1),
            Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))
        );
        let wrong_type = format!(r#"{{"type":"SystemAssigned","identityIds":["{R1}","{R2}"]}}"#);
        assert_eq!(
            parse_n(&wrong_type, 1),
            Err(ArmError::UserAssignedNotInType)
        );
        // 1000 identities (the VM limit; 20 under Miri, which is ~1000× slower).
        let n = if cfg!(miri) { 20 } else { 1000 };
        let mut big = String::from(r#"{"type":"UserAssigned","userAssignedIdentities":{"#);
        for i in 0..n {
            if i > 0 {
                big.push(',');
            }
            big.push_str(&format!(
                r#""{R1}{i}":{{"clientId":"{CID}","principalId":"{PID}"}}"#
            ));
        }
        big.push_str("}}");
        assert_eq!(parse_n(&big, n - 1), Err(ArmError::TooMany { needed: n }));
        let (_, list) = parse_n(&big, n).unwrap();
        assert_eq!(list.len(), n);
        assert_eq!(list[n - 1].0, format!("{R1}{}", n - 1));
    }

    #[test]
    fn bad_ids() {
        #[rustfmt::skip]
        let cases: &[(String, ArmError)] = &[
            (String::from(r#"{"type":"UserAssigned","identityIds":["/subscriptions/s"]}"#), ArmError::InvalidResourceId(IdentityError::NotAResourceId)),
            (String::from(r#"{"type":"UserAssigned","identityIds":[""]}"#), ArmError::InvalidResourceId(IdentityError::Empty)),
            (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}{}"]}}"#, "x".repeat(500)), ArmError::InvalidResourceId(IdentityError::TooLong)),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":"not-a-guid"}}}}}}"#), ArmError::InvalidClientId(IdentityError::NotAGuid)),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":""}}}}}}"#), ArmError::InvalidClientId(IdentityError::Empty)),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"principalId":"{CID}x"}}}}}}"#), ArmError::InvalidPrincipalId(IdentityError::NotAGuid)),
            (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":{CID:?}, "principalId":"a b"}}}}}}"#), ArmError::InvalidPrincipalId(IdentityError::ControlCharacter)),
        ];
        for (json, want) in cases {
            assert_eq!(ids(json), Err(*want), "{json}");
        }
        // The property-level principalId and tenantId are not checked.
        assert_eq!(
            ids(r#"{"type":"SystemAssigned","principalId":"x","tenantId":7}"#),
            Ok((true, vec![]))
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let json = format!(
            r#"{{
            "unknown": {{"a": [1, {{"b": [true, false, null, "s\"}}]"]}}], "c": -1.5e3, "d": {{}}}},
            "type": "UserAssigned",
            "principalId": null,
            "tenantId": "{PID}",
            "list": [[[]], {{}}, "x"],
            "userAssignedIdentities": {{
                "{R1}": {{"extra": {{"x": [1, 2, {{"y": null}}]}}, "clientId": "{CID}", "more": [], "principalId": null, "n": 12}}
            }},
            "last": true
        }}"#
        );
        assert_eq!(
            parse(&json),
            Ok((false, vec![(R1.into(), Some(CID.into()), None)]))
        );
        // Field names compare without case.
        let json = format!(
            r#"{{"Type":"userassigned","UserAssignedIdentities":{{"{R1}":{{"ClientID":"{CID}"}}}}}}"#
        );
        assert_eq!(
            parse(&json),
            Ok((false, vec![(R1.into(), Some(CID.into()), None)]))
        );
    }

    #[test]
    fn malformed() {
        use ArmError::*;
        let deep = format!(
            r#"{{"type":"None","x":{}{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        let ok_depth = format!(
            r#"{{"type":"None","x":{}{}}}"#,
            "[".repeat(31),
            "]".repeat(31)
        );
        #[rustfmt::skip]
        let cases: &[(&str, ArmError)] = &[
            ("", Malformed),
            ("null", Malformed),
            ("[]", Malformed),
            ("\"SystemAssigned\"", Malformed),
            ("{", Malformed),
            ("{}", MissingType),
            (r#"{"principalId":"x"}"#, MissingType),
            (r#"{"type":"None"} x"#, Malformed),
            (r#"{"type":"None",}"#, Malformed),
            (r#"{"type":null}"#, Malformed),
            (r#"{"type":1}"#, Malformed),
            (r#"{"type":"None","type":"None"}"#, DuplicateField),
            (r#"{"type":"UserAssigned","userAssignedIdentities":{},"userAssignedIdentities":{}}"#, DuplicateField),
            (r#"{"type":"UserAssigned","identityIds":[],"identityIds":[]}"#, DuplicateField),
            (r#"{"type":"UserAssigned","userAssignedIdentities":[]}"#, Malformed),
            (r#"{"type":"UserAssigned","userAssignedIdentities":"x"}"#, Malformed),
            (r#"{"type":"UserAssigned","userAssignedIdentities":{"/x":"y"}}"#, Malformed),
            (r#"{"type":"UserAssigned","userAssignedIdentities":{"/x":true}}"#, Malformed),
            (r#"{"type":"UserAssigned","identityIds":{}}"#, Malformed),
            (r#"{"type":"UserAssigned","identityIds":[1]}"#, Malformed),
            (r#"{"type":"UserAssigned","identityIds":[null]}"#, Malformed),
            (r#"{"type":"UserAssigned","identityIds":["/subscriptions/s/resourceGroups/rg/providers/M/t/a",]}"#, Malformed),
            (r#"{"type":"None","x":"unterminated}"#, Malformed),
            (r#"{"type":"None","x":-}"#, Malformed),
            (r#"{"type":"None","x":01}"#, Malformed),
            (r#"{"type":"None","x":1.}"#, Malformed),
            (r#"{"type":"None","x":.5}"#, Malformed),
            (r#"{"type":"None","x":1e}"#, Malformed),
            (r#"{"type":"None","x":tru}"#, Malformed),
            (r#"{"type":"None","x":nul}"#, Malformed),
            (r#"{"type":"None","x":True}"#, Malformed),
            (r#"{"type":"None","x":"\x"}"#, Malformed),
            (r#"{"type":"None","x":"\u12"}"#, Malformed),
            ("{\"type\":\"None\",\"x\":\"a\tb\"}", Malformed),
            (r#"{"type":"None","x":[1,]}"#, Malformed),
            (r#"{"type":"None","x":{"a":1,}}"#, Malformed),
            (r#"{"type":"None","x":{"a"}}"#, Malformed),
            (r#"{"type":"None","x":{1:2}}"#, Malformed),
            (r#"{"type":"None"}{}"#, Malformed),
            (&deep, TooDeep),
        ];
        for (json, want) in cases {
            assert_eq!(ids(json), Err(*want), "{json}");
        }
        assert_eq!(ids(&ok_depth), Ok((false, vec![])));
        let dup = format!(
            r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":"{CID}","clientId":"{CID}"}}}}}}"#
        );
        assert_eq!(ids(&dup), Err(DuplicateField));
        let dup = format!(
            r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"principalId":null,"PrincipalId":null}}}}}}"#
        );
        assert_eq!(ids(&dup), Err(DuplicateField));
        // Arbitrary bytes never panic.
        let samples: &[&[u8]] = &[
            b"\xff",
            b"{\"type\":\"\xff\"}",
            b"{\"\\",
            b"{\"a\":\"\\",
            b"[[[",
            b"]]]}",
            b"{\"type\":\"None\",\"x\":-}",
        ];
        for s in samples {
            let mut out = [UserAssigned::EMPTY; 2];
            assert!(parse_arm_identity(s, &mut [0u8; 16], &mut out).is_err());
        }
    }

    #[test]
    fn user_assigned_identity() {
        assert!(UserAssigned::EMPTY.identity().is_err());
        let (_, list) = parse(&format!(
            r#"{{"type":"UserAssigned","identityIds":["{R1}"]}}"#
        ))
        .unwrap();
        let u = UserAssigned {
            resource_id: &list[0].0,
            client_id: None,
            principal_id: None,
        };
        let id = u.identity().unwrap();
        assert_eq!(id.kind(), IdentityKind::ResourceId);
        assert_eq!(id.value(), R1);
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            format!("{}", ArmError::TooMany { needed: 3 }),
            "more user-assigned identities than the output holds (3 needed)"
        );
        assert_eq!(
            format!("{}", ArmError::InvalidClientId(IdentityError::NotAGuid)),
            "user-assigned identity has an invalid clientId: client or object id is not a GUID"
        );
        assert_eq!(
            format!("{}", ArmError::MissingType),
            ArmError::MissingType.as_str()
        );
    }
}
