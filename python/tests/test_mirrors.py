"""Facts written once in Rust and read by the Python package: each test fails when the
Python side drifts from the native module. Also the ARM ``identity`` property, as C has it."""

from __future__ import annotations

import inspect
import json
import re

import pytest

import imds_cache
from imds_cache import ManagedIdentityCredential, TokenCache, identities_from_arm
from imds_cache._imds_cache import DEFAULTS, ERROR_CODES, FLAVOURS, STATS_FIELDS

from conftest import ARM, VAULT, Emulator


def test_token_cache_defaults_are_the_native_ones() -> None:
    params = inspect.signature(TokenCache.__init__).parameters
    # The optional places (Arc's key directory, the share mode and directory) default to
    # None: the environment decides them, not a native default.
    optional = ("arc_key_dir", "share", "share_dir", "_clock")
    assert all(params[k].default is None for k in optional)
    defaults = {k: p.default for k, p in params.items() if k != "self" and k not in optional}
    assert defaults == DEFAULTS
    assert DEFAULTS["rate"] == 20 and DEFAULTS["in_flight"] == 5  # IMDS's own limits
    TokenCache(**DEFAULTS)


def test_stats_fields_are_the_native_ones() -> None:
    assert tuple(TokenCache().stats()) == STATS_FIELDS
    assert len(set(STATS_FIELDS)) == len(STATS_FIELDS) and "hits" in STATS_FIELDS


def test_every_flavour_name_is_accepted_and_listed(emulator: Emulator) -> None:
    for name in FLAVOURS:
        # Service Fabric is only ever spoken to over TLS.
        url = emulator.url.replace("http:", "https:") if name == "service_fabric" else emulator.url
        credential = ManagedIdentityCredential(endpoint=url, flavour=name, secret="s")
        assert credential.flavour == name
    with pytest.raises(ValueError) as unknown:
        ManagedIdentityCredential(endpoint=emulator.url, flavour="nope")
    for name in FLAVOURS:
        assert name in str(unknown.value)


def test_error_codes_are_unique_snake_case() -> None:
    assert len(set(ERROR_CODES)) == len(ERROR_CODES)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", c) for c in ERROR_CODES)
    for code in ("unavailable", "deadline", "bad_request", "not_json", "unavailable_timeout"):
        assert code in ERROR_CODES


def test_identities_from_arm_both_forms_and_prefetch(emulator: Emulator) -> None:
    users = [emulator.user(i) for i in (1, 2, 3)]
    current = {
        "type": "SystemAssigned, UserAssigned",
        "userAssignedIdentities": {
            users[0]["resource_id"]: {"clientId": users[0]["client_id"], "principalId": users[0]["object_id"]},
            users[1]["resource_id"]: {},
        },
    }
    old = {"type": "UserAssigned", "identityIds": [users[2]["resource_id"]]}
    ids = identities_from_arm(json.dumps(current))
    assert ids == [None, {"resource_id": users[0]["resource_id"]}, {"resource_id": users[1]["resource_id"]}]
    assert identities_from_arm(json.dumps(old)) == [{"resource_id": users[2]["resource_id"]}]
    with pytest.raises(ValueError, match="ARM identity property"):
        identities_from_arm('{"type": "UserAssigned", "identityIds": ["not-an-arm-id"]}')
    cache = TokenCache()
    ok, total, errors = cache.prefetch(ids + identities_from_arm(json.dumps(old)), [ARM, VAULT], endpoint=emulator.url)
    assert (ok, total, errors) == (8, 8, [])
    assert emulator.requests() == 8
    # Each is now a hit for a credential of that identity.
    for user in users:
        token = ManagedIdentityCredential(
            identity_config={"resource_id": user["resource_id"]}, endpoint=emulator.url, cache=cache
        ).get_token(ARM)
        issued = emulator.issued(token.token)
        assert issued is not None and issued["client_id"] == user["client_id"]
    assert emulator.requests() == 8
    assert "identities_from_arm" in imds_cache.__all__
