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
use crate::json::unescape::{self, IntoError};

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
    let n = unescape::unescape_into(raw, &mut buf).map_err(|e| match e {
        IntoError::BadEscape => ArmError::Malformed,
        IntoError::NoRoom => ArmError::UnknownType,
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

/// Whether the raw (escaped) `raw` decodes to `plain`, ignoring ASCII case.
fn raw_eq_ignore_case(raw: &str, plain: &str) -> Result<bool, ArmError> {
    unescape::eq_ignore_ascii_case(raw, plain).map_err(|_| ArmError::Malformed)
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
        let n = match unescape::unescape_into(raw, buf) {
            Ok(n) => n,
            Err(e) => {
                self.scratch = buf;
                return Err(match e {
                    IntoError::BadEscape => ArmError::Malformed,
                    IntoError::NoRoom => ArmError::ScratchTooSmall,
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
mod tests;
