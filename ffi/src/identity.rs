//! Identities: a small transparent struct that borrows its selector text from the caller,
//! filled (and validated) by `imds_cache_identity_…`, or read from an ARM `identity` property.

use ::imds_cache::{parse_arm_identity, ArmError, Identity, IdentityKind, Resource, UserAssigned};

use crate::{bytes, bytes_mut, guard, imds_cache_result, non_null, put};

/// How an identity is selected.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imds_cache_identity_kind {
    /// The system-assigned identity (no selector).
    System = 0,
    /// A user-assigned identity by client (application) id, a GUID.
    ClientId = 1,
    /// A user-assigned identity by object (principal) id, a GUID.
    ObjectId = 2,
    /// A user-assigned identity by ARM resource id.
    ResourceId = 3,
}

/// A managed identity. The selector bytes are borrowed, not copied: `value` must stay valid
/// and unchanged while the struct is used. Fill it with `imds_cache_identity_system`,
/// `_client_id`, `_object_id`, `_resource_id` or `imds_cache_identities_from_arm`; every
/// function that takes one validates it again, so a hand-filled struct is safe too.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imds_cache_identity {
    /// A value of `imds_cache_identity_kind`.
    pub kind: u32,
    /// The selector text (GUID or ARM resource id), not NUL-terminated; NULL for the system
    /// identity.
    pub value: *const u8,
    /// Its length in bytes (0 for the system identity).
    pub value_len: usize,
}

/// A `(pointer, length)` string inside an array (`imds_cache_prefetch`'s resources).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imds_cache_str {
    /// The bytes, not NUL-terminated (NULL allowed when `len` is 0).
    pub ptr: *const u8,
    /// Their length.
    pub len: usize,
}

/// The core's identity for a C one, validated.
///
/// # Safety
/// `identity` is NULL or valid for a read, and its `value` is valid for `value_len` bytes for
/// `'a` (or NULL when that is 0).
pub(crate) unsafe fn identity_of<'a>(
    identity: *const imds_cache_identity,
) -> Result<Identity<'a>, imds_cache_result> {
    non_null(identity)?;
    // SAFETY: not NULL; valid for a read by contract.
    let c = unsafe { identity.read() };
    let kind = match c.kind {
        0 => IdentityKind::System,
        1 => IdentityKind::ClientId,
        2 => IdentityKind::ObjectId,
        3 => IdentityKind::ResourceId,
        _ => return Err(imds_cache_result::InvalidIdentity),
    };
    if kind == IdentityKind::System {
        return Ok(Identity::SYSTEM);
    }
    // SAFETY: forwarded contract.
    let value = unsafe { bytes(c.value, c.value_len)? };
    let value = std::str::from_utf8(value).map_err(|_| imds_cache_result::InvalidIdentity)?;
    Identity::new(kind, value).map_err(|_| imds_cache_result::InvalidIdentity)
}

/// A resource from `(ptr, len)`, validated.
///
/// # Safety
/// As [`bytes`].
pub(crate) unsafe fn resource_of<'a>(
    ptr: *const u8,
    len: usize,
) -> Result<Resource<'a>, imds_cache_result> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, len)? };
    let s = std::str::from_utf8(b).map_err(|_| imds_cache_result::InvalidResource)?;
    Resource::new(s).map_err(|_| imds_cache_result::InvalidResource)
}

/// The C struct for a validated identity (borrowing the same bytes).
pub(crate) fn identity_to_c(identity: &Identity<'_>) -> imds_cache_identity {
    let value = identity.value();
    imds_cache_identity {
        kind: identity.kind() as u32,
        value: if value.is_empty() {
            std::ptr::null()
        } else {
            value.as_ptr()
        },
        value_len: value.len(),
    }
}

/// Validates `(value, value_len)` as an identity of `kind` and writes it to `out`.
///
/// # Safety
/// As the public constructors.
unsafe fn make(
    kind: IdentityKind,
    value: *const u8,
    value_len: usize,
    out: *mut imds_cache_identity,
) -> imds_cache_result {
    guard(|| {
        non_null(out)?;
        // SAFETY: forwarded contract.
        let value = unsafe { bytes(value, value_len)? };
        let value = std::str::from_utf8(value).map_err(|_| imds_cache_result::InvalidIdentity)?;
        let identity =
            Identity::new(kind, value).map_err(|_| imds_cache_result::InvalidIdentity)?;
        // SAFETY: not NULL; valid by contract.
        unsafe { put(out, identity_to_c(&identity)) }
    })
}

/// Writes the system-assigned identity to `*out_identity`.
///
/// # Safety
/// `out_identity` is valid for a write (NULL is `IMDS_CACHE_RESULT_NULL_POINTER`).
#[no_mangle]
pub unsafe extern "C" fn imds_cache_identity_system(
    out_identity: *mut imds_cache_identity,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe { make(IdentityKind::System, std::ptr::null(), 0, out_identity) }
}

/// Checks that `(client_id, client_id_len)` is a GUID (8-4-4-4-12 hex digits, any case) and
/// writes a user-assigned identity selected by it to `*out_identity`, which borrows the bytes:
/// they must outlive its use. A malformed id is `IMDS_CACHE_RESULT_INVALID_IDENTITY`.
///
/// # Safety
/// `client_id` is valid for `client_id_len` bytes (or NULL when that is 0); `out_identity` is
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_identity_client_id(
    client_id: *const u8,
    client_id_len: usize,
    out_identity: *mut imds_cache_identity,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        make(
            IdentityKind::ClientId,
            client_id,
            client_id_len,
            out_identity,
        )
    }
}

/// As `imds_cache_identity_client_id`, for an object (principal) id.
///
/// # Safety
/// `object_id` is valid for `object_id_len` bytes (or NULL when that is 0); `out_identity` is
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_identity_object_id(
    object_id: *const u8,
    object_id_len: usize,
    out_identity: *mut imds_cache_identity,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        make(
            IdentityKind::ObjectId,
            object_id,
            object_id_len,
            out_identity,
        )
    }
}

/// Checks that `(resource_id, resource_id_len)` is an ARM resource id
/// (`/subscriptions/…/resourceGroups/…/providers/…/…/name`, at most 512 bytes) and writes a
/// user-assigned identity selected by it to `*out_identity`, which borrows the bytes.
///
/// # Safety
/// `resource_id` is valid for `resource_id_len` bytes (or NULL when that is 0);
/// `out_identity` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_identity_resource_id(
    resource_id: *const u8,
    resource_id_len: usize,
    out_identity: *mut imds_cache_identity,
) -> imds_cache_result {
    // SAFETY: forwarded contract.
    unsafe {
        make(
            IdentityKind::ResourceId,
            resource_id,
            resource_id_len,
            out_identity,
        )
    }
}

/// Reads the JSON value of a resource's ARM `identity` property (both the
/// `userAssignedIdentities` dictionary and the old `identityIds` array) and writes the granted
/// user-assigned identities, selected by resource id, to `out_identities[0..*out_written]`,
/// and whether the system-assigned identity is enabled to `*out_system`.
///
/// The identities borrow from `json`, or from `scratch` for ids written with JSON escapes:
/// both must outlive their use. `scratch` must hold at least `json_len` bytes (else
/// `IMDS_CACHE_RESULT_INVALID_ARGUMENT`). When more identities are listed than `out_len`,
/// the result is `IMDS_CACHE_RESULT_BUFFER_TOO_SMALL` with `*out_written` set to the number
/// listed; `(NULL, 0)` asks for it. A malformed property is
/// `IMDS_CACHE_RESULT_INVALID_ARM_IDENTITY`. Allocates a temporary array while parsing.
///
/// # Safety
/// `json` is valid for `json_len` bytes, `scratch` for `scratch_len` writable bytes and
/// `out_identities` for `out_len` entries (each may be NULL when its length is 0);
/// `out_written` and `out_system` are valid for a write.
#[no_mangle]
pub unsafe extern "C" fn imds_cache_identities_from_arm(
    json: *const u8,
    json_len: usize,
    scratch: *mut u8,
    scratch_len: usize,
    out_identities: *mut imds_cache_identity,
    out_len: usize,
    out_written: *mut usize,
    out_system: *mut bool,
) -> imds_cache_result {
    guard(|| {
        non_null(out_written)?;
        non_null(out_system)?;
        if out_len > 0 {
            non_null(out_identities)?;
        }
        if out_len > isize::MAX as usize / std::mem::size_of::<imds_cache_identity>() {
            return Err(imds_cache_result::InvalidArgument);
        }
        // SAFETY: forwarded contract.
        let json = unsafe { bytes(json, json_len)? };
        if scratch_len < json.len() {
            return Err(imds_cache_result::InvalidArgument);
        }
        // SAFETY: forwarded contract.
        let scratch = unsafe { bytes_mut(scratch, scratch_len)? };
        // No more entries than the JSON could list (each takes more than 16 bytes of it).
        let mut parsed = vec![UserAssigned::EMPTY; out_len.min(json.len() / 16 + 1)];
        let room = if out_len == 0 { 0 } else { parsed.len() };
        let found = match parse_arm_identity(json, scratch, &mut parsed[..room]) {
            Ok(found) => found,
            Err(ArmError::TooMany { needed }) => {
                // SAFETY: checked not NULL; valid by contract.
                unsafe { out_written.write(needed) };
                return Err(imds_cache_result::BufferTooSmall);
            }
            Err(_) => return Err(imds_cache_result::InvalidArmIdentity),
        };
        for (i, entry) in parsed[..found.user_assigned].iter().enumerate() {
            let identity = entry
                .identity()
                .map_err(|_| imds_cache_result::InvalidArmIdentity)?;
            // SAFETY: i < user_assigned <= room <= out_len entries, valid by contract.
            unsafe { out_identities.add(i).write(identity_to_c(&identity)) };
        }
        // SAFETY: checked not NULL; valid by contract.
        unsafe {
            out_written.write(found.user_assigned);
            out_system.write(found.system);
        }
        Ok(())
    })
}
