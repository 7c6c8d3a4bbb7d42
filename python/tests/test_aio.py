"""The asyncio credential against the emulator."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from azure.core.credentials_async import AsyncSupportsTokenInfo, AsyncTokenCredential

from imds_cache import CredentialUnavailableError, ManagedIdentityError, TokenCache
from imds_cache.aio import ManagedIdentityCredential

from conftest import ARM, VAULT, Emulator

pytestmark = pytest.mark.asyncio


async def test_token_hit_and_protocols(imds: Emulator) -> None:
    async with ManagedIdentityCredential(cache=TokenCache()) as credential:
        assert isinstance(credential, AsyncTokenCredential)
        assert isinstance(credential, AsyncSupportsTokenInfo)
        token = await credential.get_token(f"{ARM}/.default")
        assert imds.issued(token.token) is not None
        assert await credential.get_token(ARM + "/.default") is token
        info = await credential.get_token_info(ARM + "/.default")
        assert info.token == token.token and token.token not in repr(info)
        again = await credential.get_token(ARM + "/.default", claims="{}")
        assert again is not token and imds.requests() == 2


async def test_1000_concurrent_awaits_over_100_keys_make_100_requests(emulator_factory: Any) -> None:
    e = emulator_factory("--identities", "100", "--rate", "500", "--concurrency", "16")
    e.faults({"kind": "delay", "ms": 20})
    cache = TokenCache(rate=125, rate_window_s=0.25, in_flight=16)
    credentials = [
        ManagedIdentityCredential(client_id=e.user(i)["client_id"], endpoint=e.url, cache=cache)
        for i in range(1, 101)
    ]
    threads_before = threading.active_count()
    tokens = await asyncio.gather(*(credentials[i % 100].get_token(VAULT) for i in range(1000)))
    assert len(tokens) == 1000
    assert len({t.token for t in tokens}) == 100
    assert e.requests() == 100
    # No thread per call: the driver's pool is small.
    assert threading.active_count() - threads_before <= 20


async def test_the_loop_keeps_running_during_a_miss(emulator_factory: Any) -> None:
    e = emulator_factory()
    e.faults({"kind": "delay", "ms": 200})
    credential = ManagedIdentityCredential(endpoint=e.url, cache=TokenCache())
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.ensure_future(tick())
    await credential.get_token(ARM)
    ticker.cancel()
    # The loop ran other tasks while the 200 ms fetch was outstanding.
    assert ticks >= 2, ticks


async def test_errors(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    e = emulator_factory("--identities", "1")
    with pytest.raises(CredentialUnavailableError) as unavailable:
        await ManagedIdentityCredential(
            client_id="11111111-2222-3333-4444-555555555555", endpoint=e.url, cache=TokenCache()
        ).get_token(ARM)
    # The endpoint's own error comes through the worker pool too.
    assert unavailable.value.code == "bad_request"
    assert unavailable.value.endpoint_code == "invalid_request"
    assert "Identity not found" in unavailable.value.description
    e.faults({"kind": "non_json"})
    with pytest.raises(CredentialUnavailableError) as first:
        await ManagedIdentityCredential(endpoint=e.url, cache=TokenCache()).get_token(ARM)
    # At first contact an HTML page means no identity endpoint here; once a token came from
    # the endpoint it is a terminal failure.
    assert first.value.code == "unavailable_not_json"
    e.faults()
    credential = ManagedIdentityCredential(endpoint=e.url, cache=TokenCache())
    await credential.get_token(VAULT)
    e.faults({"kind": "non_json"})
    with pytest.raises(ManagedIdentityError) as caught:
        await credential.get_token(ARM)
    assert caught.value.code == "not_json"


async def test_cancelled_waiters_are_harmless(emulator_factory: Any) -> None:
    e = emulator_factory()
    e.faults({"kind": "delay", "ms": 200})
    credential = ManagedIdentityCredential(endpoint=e.url, cache=TokenCache())
    task = asyncio.ensure_future(credential.get_token(ARM))
    for _ in range(200):  # until the request is at the emulator (bounded)
        if e.requests() >= 1:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):  # until the driver has answered the cancelled waiter (bounded)
        if credential.cache.stats()["tokens"] == 1:
            break
        await asyncio.sleep(0.01)
    token = await credential.get_token(ARM)
    assert e.issued(token.token) is not None and e.requests() == 1
