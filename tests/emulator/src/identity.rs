//! Deterministic identities: index 0 is the system-assigned identity, 1..=N the user-assigned
//! ones. Every id is derived from the index alone, so a test can compute them without asking.

use serde::Serialize;

/// Tenant id of every identity (the `tid` claim and the `iss` path).
pub const TENANT_ID: &str = "4a1c1c8e-2f5b-4b63-9b6e-2d0a5f3e7c10";
/// Subscription that holds the emulated VM and its user-assigned identities.
pub const SUBSCRIPTION_ID: &str = "9c3f5e2a-7d41-4e8b-a0f6-3b5d7c9e1f24";
/// Resource group that holds the emulated VM and its user-assigned identities.
pub const RESOURCE_GROUP: &str = "imds-emulator-rg";
/// Name of the emulated VM (the system-assigned identity's resource).
pub const VM_NAME: &str = "imds-emulator-vm";

/// One managed identity known to the emulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// 0 for the system-assigned identity, 1..=N for user-assigned ones.
    pub index: usize,
    /// `"system"` or `"uai-<index>"` (also the last segment of a user-assigned ARM id).
    pub name: String,
    /// `"system_assigned"` or `"user_assigned"`.
    pub kind: &'static str,
    /// Client (application) id: the `client_id` selector, the `appid` claim.
    pub client_id: String,
    /// Object (principal) id: the `object_id` selector, the `oid` claim.
    pub object_id: String,
    /// ARM resource id: the `msi_res_id`/`mi_res_id` selector. For the system-assigned
    /// identity, the VM's resource id.
    pub resource_id: String,
}

impl Identity {
    /// The system-assigned identity.
    pub fn system() -> Identity {
        Identity {
            index: 0,
            name: "system".to_string(),
            kind: "system_assigned",
            client_id: guid(0, 1),
            object_id: guid(0, 2),
            resource_id: format!(
                "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/{VM_NAME}"
            ),
        }
    }

    /// The user-assigned identity number `index` (1-based; 0 gives the system identity).
    pub fn user_assigned(index: usize) -> Identity {
        if index == 0 {
            return Identity::system();
        }
        let name = format!("uai-{index}");
        Identity {
            index,
            kind: "user_assigned",
            client_id: guid(index as u64, 1),
            object_id: guid(index as u64, 2),
            resource_id: format!(
                "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
            ),
            name,
        }
    }

    /// Whether this is the system-assigned identity.
    pub fn is_system(&self) -> bool {
        self.index == 0
    }

    /// The `xms_mirid` claim: the resource id with `resourcegroups` lower-cased, as Entra
    /// writes it.
    pub fn mirid(&self) -> String {
        self.resource_id
            .replacen("/resourceGroups/", "/resourcegroups/", 1)
    }

    /// Whether `s` names this identity: its name, index, client id, object id or resource id
    /// (case-insensitive).
    pub fn matches(&self, s: &str) -> bool {
        s.eq_ignore_ascii_case(&self.name)
            || s == self.index.to_string()
            || s.eq_ignore_ascii_case(&self.client_id)
            || s.eq_ignore_ascii_case(&self.object_id)
            || s.eq_ignore_ascii_case(&self.resource_id)
    }
}

/// splitmix64: a tiny, good 64-bit mixer.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A version-4-shaped GUID derived from (seed, salt).
pub(crate) fn guid(seed: u64, salt: u64) -> String {
    let a = mix(seed ^ mix(salt.wrapping_add(0x1d)));
    let b = mix(a ^ salt.rotate_left(17));
    let hi = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}
