"""Off Azure and in credential chains: where no managed identity is, the credential says
"unavailable" at first contact, with one attempt and no retry, and azure-identity's chains
move on to the next credential. Every "no route" here is on loopback (a listener whose
accept queue is full); nothing is ever sent to 169.254.169.254."""

from __future__ import annotations

import subprocess
import time
from typing import Any, Iterator, List

import pytest
from azure.core.credentials import AccessToken
from azure.identity import ChainedTokenCredential
from azure.identity import CredentialUnavailableError as AzureUnavailable
from azure.identity.aio import ChainedTokenCredential as AsyncChainedTokenCredential

from imds_cache import CredentialUnavailableError, ManagedIdentityCredential, TokenCache
from imds_cache.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential

from conftest import ARM, EMULATOR, Emulator


@pytest.fixture
def listener() -> Iterator[Any]:
    """Starts `imds-emulator --mode blackhole|refused`; returns its URL."""
    started: List["subprocess.Popen[str]"] = []

    def start(mode: str) -> str:
        proc = subprocess.Popen(
            [str(EMULATOR), "--mode", mode, "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        return url

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


class Next:
    """The next credential of a chain: counts the calls it gets."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken("from-the-next-credential", int(time.time()) + 3600)

    async def __aenter__(self) -> "Next":
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None

    async def close(self) -> None:
        return None


class AsyncNext(Next):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # type: ignore[override]
        return Next.get_token(self, *scopes, **kwargs)


def no_identity_endpoints(emulator_factory: Any, listener: Any) -> List[tuple]:
    """(name, url) of each kind of place where no managed identity is."""
    docker = emulator_factory()
    docker.faults({"kind": "unreachable_403"})
    html = emulator_factory()
    html.faults({"kind": "non_json"})
    return [
        ("dropped connect", listener("blackhole")),
        ("refused connect", listener("refused")),
        ("Docker Desktop's 403", docker.url),
        ("an HTML 200", html.url),
    ]


def test_a_chain_moves_on_at_first_contact(emulator_factory: Any, listener: Any) -> None:
    for name, url in no_identity_endpoints(emulator_factory, listener):
        cache = TokenCache()
        ours = ManagedIdentityCredential(endpoint=url, cache=cache)
        following = Next()
        token = ChainedTokenCredential(ours, following).get_token(ARM)  # type: ignore[arg-type]
        assert token.token == "from-the-next-credential" and following.calls == 1, name
        # At once: one attempt, no retry; and remembered: the next call sends nothing.
        stats = cache.stats()
        assert (stats["fetches"], stats["failures_retry"], stats["failures_unavailable"]) == (1, 0, 1), (name, stats)
        with pytest.raises(CredentialUnavailableError) as caught:
            ours.get_token(ARM)
        assert isinstance(caught.value, AzureUnavailable), name
        assert caught.value.code.startswith("unavailable"), (name, caught.value.code)
        assert url.removeprefix("http://") in str(caught.value), (name, str(caught.value))
        assert cache.stats()["fetches"] == 1, name


@pytest.mark.asyncio
async def test_an_async_chain_moves_on_at_first_contact(emulator_factory: Any, listener: Any) -> None:
    for name, url in no_identity_endpoints(emulator_factory, listener):
        cache = TokenCache()
        ours = AsyncManagedIdentityCredential(endpoint=url, cache=cache)
        following = AsyncNext()
        chain = AsyncChainedTokenCredential(ours, following)  # type: ignore[arg-type]
        token = await chain.get_token(ARM)
        assert token.token == "from-the-next-credential" and following.calls == 1, name
        stats = cache.stats()
        assert (stats["fetches"], stats["failures_retry"]) == (1, 0), (name, stats)


def test_after_a_token_the_same_failure_is_retried(emulator_factory: Any) -> None:
    e: Emulator = emulator_factory()
    cache = TokenCache(backoff_s=0.05, deadline_s=20)
    credential = ManagedIdentityCredential(endpoint=e.url, cache=cache)
    credential.get_token(ARM)
    # A 403 "unreachable" from a proxy, now that this endpoint has given tokens: a terminal
    # refusal for this request, not "no identity here".
    e.faults({"kind": "unreachable_403"})
    with pytest.raises(Exception) as caught:
        credential.get_token("https://vault.azure.net")
    assert not isinstance(caught.value, CredentialUnavailableError), caught.value
