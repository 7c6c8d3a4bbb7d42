"""The sync credential against the emulator: tokens, hits, identities, protocols, errors,
faults (D7), deadline, refresh, logging, proxies, fork, the GIL."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest
from azure.core.credentials import AccessToken as CoreAccessToken
from azure.core.credentials import AccessTokenInfo as CoreAccessTokenInfo
from azure.core.credentials import SupportsTokenInfo, TokenCredential
from azure.core.exceptions import ClientAuthenticationError

import imds_cache
from imds_cache import (
    CredentialUnavailableError,
    ManagedIdentityCredential,
    ManagedIdentityError,
    TokenCache,
)

from conftest import ARM, REPO, STORAGE, VAULT, Emulator


SCRIPT = Path(sys.executable).parent / "imds-cache"


def quick(**kw: Any) -> TokenCache:
    """A cache with fast retries, for fault tests."""
    settings: dict = dict(backoff_s=0.02, gone_interval_s=0.1, attempt_timeout_s=0.6, deadline_s=20.0)
    settings.update(kw)
    return TokenCache(**settings)


def test_installed_wheel_not_source_tree() -> None:
    assert imds_cache.__file__ is not None
    assert not Path(imds_cache.__file__).resolve().is_relative_to(REPO / "python" / "python")
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert version and imds_cache.__version__ == version.group(1)


def test_token_from_the_emulator_and_hits_return_the_same_object(imds: Emulator) -> None:
    cache = TokenCache()
    credential = ManagedIdentityCredential(cache=cache)
    token = credential.get_token(f"{ARM}/.default")
    issued = imds.issued(token.token)
    assert issued is not None and issued["resource"] == ARM
    assert issued["client_id"] == imds.user(0)["client_id"]
    assert token.expires_on == issued["exp"]
    assert isinstance(token, CoreAccessToken) and isinstance(token, imds_cache.AccessToken)
    for _ in range(100):
        assert credential.get_token(f"{ARM}/.default") is token
    info = credential.get_token_info(f"{ARM}/.default")
    assert isinstance(info, CoreAccessTokenInfo) and info.token == token.token
    assert info.token_type == "Bearer"
    assert info.refresh_on is not None and time.time() < info.refresh_on < info.expires_on
    assert credential.get_token_info(f"{ARM}/.default") is info
    # A resource without /.default is the same resource.
    assert credential.get_token(ARM).token == token.token
    assert imds.requests() == 1
    assert cache.stats()["tokens"] == 1


def test_repr_hides_the_token(imds: Emulator) -> None:
    credential = ManagedIdentityCredential(cache=TokenCache())
    token = credential.get_token(VAULT)
    info = credential.get_token_info(VAULT)
    for text in (repr(token), str(token), repr(info), str(info), repr(credential)):
        assert token.token not in text
        assert token.token[:40] not in text
    assert "redacted" in repr(token) and "redacted" in repr(info)


def test_protocols_and_context_manager(imds: Emulator) -> None:
    with ManagedIdentityCredential(cache=TokenCache()) as credential:
        assert isinstance(credential, TokenCredential)
        assert isinstance(credential, SupportsTokenInfo)
        assert credential.get_token(ARM, tenant_id="ignored", enable_cae=True).token
    credential.close()


def test_identity_selection(imds: Emulator) -> None:
    cache = TokenCache()
    user = imds.user(2)
    ways = [
        ManagedIdentityCredential(client_id=user["client_id"], cache=cache),
        ManagedIdentityCredential(identity_config={"client_id": user["client_id"]}, cache=cache),
        ManagedIdentityCredential(identity_config={"object_id": user["object_id"]}, cache=cache),
        ManagedIdentityCredential(identity_config={"resource_id": user["resource_id"]}, cache=cache),
    ]
    for credential in ways:
        issued = imds.issued(credential.get_token(ARM).token)
        assert issued is not None and issued["client_id"] == user["client_id"], credential
    # client_id twice is one key: one request; object and resource ids are keys of their own.
    assert imds.requests() == 3
    # azure-identity's other spellings of a resource id are the same key: no new request.
    for spelling in ("mi_res_id", "msi_res_id"):
        again = ManagedIdentityCredential(identity_config={spelling: user["resource_id"]}, cache=cache)
        issued = imds.issued(again.get_token(ARM).token)
        assert issued is not None and issued["client_id"] == user["client_id"]
    assert imds.requests() == 3
    with pytest.raises(ValueError):
        ManagedIdentityCredential(client_id=user["client_id"], identity_config={"object_id": user["object_id"]})
    with pytest.raises(ValueError):
        ManagedIdentityCredential(identity_config={"object_id": "a", "resource_id": "b"})
    with pytest.raises(ValueError):
        ManagedIdentityCredential(client_id="not-a-guid")
    with pytest.raises(ValueError, match="mi_res_id") as unknown:
        ManagedIdentityCredential(identity_config={"principal": "x"})
    # The message lists every key that is known.
    for known in ("client_id", "object_id", "resource_id", "mi_res_id", "msi_res_id"):
        assert known in str(unknown.value)
    with pytest.raises(ValueError):
        ways[0].get_token(ARM, VAULT)
    with pytest.raises(ValueError):
        ways[0].get_token()


def test_two_credentials_for_one_identity_make_one_request(imds: Emulator) -> None:
    # The process-wide default cache: created here, after the environment points at us.
    a = ManagedIdentityCredential(client_id=imds.user(1)["client_id"])
    b = ManagedIdentityCredential(identity_config={"client_id": imds.user(1)["client_id"].upper()})
    assert a.cache is b.cache is imds_cache.default_cache()
    assert a.get_token(STORAGE).token == b.get_token(STORAGE).token
    assert imds.requests() == 1


def test_claims_bypass_the_cache_once(imds: Emulator) -> None:
    credential = ManagedIdentityCredential(cache=TokenCache())
    first = credential.get_token(ARM)
    again = credential.get_token(ARM, claims='{"access_token":{"nbf":{"essential":true}}}')
    assert again is not first
    assert imds.requests() == 2
    assert credential.get_token(ARM) is again
    info = credential.get_token_info(ARM, options={"claims": "{}"})
    assert imds.requests() == 3 and info.token
    assert credential.get_token(ARM).token in {t["token"] for t in imds.tokens()}


def test_a_hit_reads_no_environment(
    imds: Emulator, emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = ManagedIdentityCredential(cache=TokenCache())
    token = credential.get_token(ARM)
    reads: List[str] = []
    real = os.environ.__class__.__getitem__

    def spy(self: Any, key: str) -> str:
        reads.append(key)
        return real(self, key)

    monkeypatch.setattr(os.environ.__class__, "__getitem__", spy)
    monkeypatch.setattr(os, "getenv", lambda *a, **k: reads.append(a[0]))
    assert credential.get_token(ARM) is token
    assert credential.get_token_info(ARM).token == token.token
    monkeypatch.undo()
    assert reads == []
    # The endpoint is read again when a request is built (D11), not on a hit.
    other = emulator_factory()
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", other.url)
    assert credential.get_token(ARM) is token
    assert other.issued(credential.get_token(VAULT).token) is not None
    assert imds.requests() == 1 and other.requests() == 1


def test_every_flavour(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for mode, flavour in [
        ("imds", "imds"),
        ("appservice2019", "app_service_2019"),
        ("msi2017", "msi_2017"),
        ("azureml", "msi_2017"),
        ("cloudshell", "cloud_shell"),
        ("arc", "arc"),
    ]:
        e = emulator_factory("--mode", mode, "--identities", "2")
        with monkeypatch.context() as env:
            for name, value in e.config["env"].items():
                env.setenv(name, value)
            cache = TokenCache(arc_key_dir=e.config["arc_key_dir"] or None)
            credential = ManagedIdentityCredential(cache=cache)
            assert credential.flavour == flavour, mode
            token = credential.get_token(ARM)
            issued = e.issued(token.token)
            assert issued is not None and issued["client_id"] == e.user(0)["client_id"], mode
            assert token.expires_on == issued["exp"], mode
            if mode in ("imds", "appservice2019", "msi2017"):
                user = e.user(1)["client_id"]
                token = ManagedIdentityCredential(client_id=user, cache=cache).get_token(ARM)
                issued = e.issued(token.token)
                assert issued is not None and issued["client_id"] == user, mode
    # The retired VM extension is only ever chosen explicitly.
    e = emulator_factory("--mode", "vmext", "--identities", "2")
    url = e.url + "/oauth2/token"
    credential = ManagedIdentityCredential(
        client_id=e.user(1)["client_id"], flavour="vm_extension", endpoint=url, cache=TokenCache()
    )
    assert credential.flavour == "vm_extension"
    issued = e.issued(credential.get_token(ARM).token)
    assert issued is not None and issued["client_id"] == e.user(1)["client_id"]
    # An App Service endpoint given explicitly, with its secret.
    e = emulator_factory("--mode", "appservice2019")
    credential = ManagedIdentityCredential(
        flavour="app_service_2019",
        endpoint=e.config["env"]["IDENTITY_ENDPOINT"],
        secret=e.config["secret"],
        cache=TokenCache(),
    )
    assert e.issued(credential.get_token(VAULT).token) is not None


def test_retried_faults(emulator_factory: Any) -> None:
    for rule, requests in [
        ({"kind": "status", "status": 404, "count": 2}, 3),
        ({"kind": "too_many_requests", "retry_after": 1, "count": 1}, 2),
        ({"kind": "status", "status": 500, "count": 2}, 3),
        ({"kind": "status", "status": 503, "count": 1}, 2),
        ({"kind": "reset", "count": 2}, 3),
        ({"kind": "truncate", "count": 2}, 3),
        ({"kind": "hang", "ms": 2000, "count": 1}, 2),
        ({"kind": "trickle", "chunk": 1, "interval_ms": 50, "count": 1}, 2),
        ({"kind": "gone", "window_ms": 300}, None),
    ]:
        e = emulator_factory()
        e.faults(rule)
        cache = quick()
        started = time.monotonic()
        token = ManagedIdentityCredential(endpoint=e.url, cache=cache).get_token(ARM)
        assert e.issued(token.token) is not None, rule
        assert cache.stats()["failures_retry"] >= 1, rule
        if requests is not None:
            assert e.requests() == requests, rule
        assert time.monotonic() - started < 10, rule


def test_other_framings(emulator_factory: Any) -> None:
    for rule in ({"kind": "chunked"}, {"kind": "eof_body"}, {"kind": "delay", "ms": 50}):
        e = emulator_factory()
        e.faults(rule)
        token = ManagedIdentityCredential(endpoint=e.url, cache=quick()).get_token(ARM)
        assert e.issued(token.token) is not None and e.requests() == 1, rule


def test_terminal_faults(emulator_factory: Any) -> None:
    for rule, code in [
        ({"kind": "non_json"}, "not_json"),
        ({"kind": "malformed_json"}, "not_json"),
        ({"kind": "oversized", "bytes": 65536}, "token_too_large"),
        ({"kind": "expired"}, "expired_on_arrival"),
        ({"kind": "status", "status": 403}, "forbidden"),
    ]:
        e = emulator_factory()
        credential = ManagedIdentityCredential(endpoint=e.url, cache=quick(negative_ttl_s=60))
        # A token first: before one came from the endpoint, a non-JSON answer means "no
        # identity endpoint here" (test_chain.py).
        credential.get_token(VAULT)
        e.faults(rule)
        with pytest.raises(ManagedIdentityError) as caught:
            credential.get_token(ARM)
        assert isinstance(caught.value, ClientAuthenticationError)
        assert caught.value.code == code, (rule, caught.value.code)
        assert code in imds_cache._imds_cache.ERROR_CODES
        with pytest.raises(ManagedIdentityError):
            credential.get_token(ARM)  # remembered: no second request
        assert e.requests() == 2, rule
    e = emulator_factory("--identities", "2")
    e.faults({"kind": "wrong_client_id"})
    with pytest.raises(ManagedIdentityError) as caught:
        ManagedIdentityCredential(client_id=e.user(1)["client_id"], endpoint=e.url, cache=quick()).get_token(ARM)
    assert caught.value.code == "client_id_mismatch"


def test_unassigned_identity_is_unavailable(imds: Emulator) -> None:
    missing = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(CredentialUnavailableError) as caught:
        ManagedIdentityCredential(client_id=missing, cache=TokenCache()).get_token(ARM)
    error = caught.value
    assert isinstance(error, ClientAuthenticationError)
    assert error.code == "bad_request" and error.endpoint_code == "invalid_request"
    assert "Identity not found" in error.description
    assert error.status_code == 400


def test_unavailable_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{port}")
    cache = TokenCache()
    with pytest.raises(CredentialUnavailableError) as caught:
        ManagedIdentityCredential(cache=cache).get_token(ARM)
    assert caught.value.code == "unavailable"
    # At once: one attempt, no retry.
    stats = cache.stats()
    assert (stats["fetches"], stats["failures_retry"], stats["failures_unavailable"]) == (1, 0, 1)
    # azure-identity's chain moves on past it.
    from azure.identity import ChainedTokenCredential
    from azure.identity import CredentialUnavailableError as IdentityUnavailable

    assert isinstance(caught.value, IdentityUnavailable)
    with pytest.raises(ClientAuthenticationError):
        ChainedTokenCredential(ManagedIdentityCredential(cache=TokenCache())).get_token(ARM)


def test_aks_workload_identity_is_unavailable(monkeypatch: pytest.MonkeyPatch, imds: Emulator) -> None:
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/token")
    monkeypatch.setenv("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")
    credential = ManagedIdentityCredential(cache=TokenCache())
    assert credential.flavour is None
    with pytest.raises(CredentialUnavailableError, match="workload identity"):
        credential.get_token(ARM)
    assert imds.requests() == 0


def test_deadline(emulator_factory: Any) -> None:
    e = emulator_factory()
    e.faults({"kind": "status", "status": 503})
    cache = quick(deadline_s=1.5, backoff_s=0.1)
    with pytest.raises(ManagedIdentityError) as caught:
        ManagedIdentityCredential(endpoint=e.url, cache=cache).get_token(ARM)
    assert caught.value.code == "deadline" and caught.value.status_code == 503
    # It kept trying until the deadline (backoff 0.1, 0.2, 0.4, 0.8 s: 3 to 5 attempts fit),
    # then gave up: no attempt is left running.
    assert 3 <= e.requests() <= 6, e.requests()
    assert cache.stats()["failures_retry"] == e.requests()


def test_ctrl_c_interrupts_a_waiting_call_and_the_fetch_still_fills_the_cache(
    emulator_factory: Any,
) -> None:
    e = emulator_factory()
    e.faults({"kind": "delay", "ms": 3000, "count": 1})
    credential = ManagedIdentityCredential(endpoint=e.url, cache=TokenCache())
    timer = threading.Timer(0.3, lambda: signal.raise_signal(signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            credential.get_token(ARM)
    finally:
        timer.cancel()
    interrupted = time.monotonic() - started
    assert interrupted < 1.5, interrupted  # the 3 s delay was not waited out
    # The fetch went on: the next call gets its token (waiting for the rest of the delay),
    # and the emulator saw one request in all.
    token = credential.get_token(ARM)
    assert e.issued(token.token) is not None
    assert e.requests() == 1


def wait_until(condition: Any, what: str, limit_s: float = 15.0) -> None:
    """Polls `condition` until it holds; `limit_s` only bounds a run that went wrong."""
    give_up = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < give_up, f"never: {what}"
        time.sleep(0.01)


def test_refresh_renews_in_the_background_and_a_failed_one_keeps_the_token(emulator_factory: Any) -> None:
    # 362 s tokens with a 360 s margin: a refresh is due within 2 s of the fetch (D8's
    # jitter), on the cache's fake clock, which moves only when the test says.
    e = emulator_factory("--token-lifetime", "362")
    clock = imds_cache._imds_cache.FakeClock()
    cache = TokenCache(refresh_margin_s=360, min_lifetime_s=1, backoff_s=0.1, eager_retry_s=0.2, _clock=clock)
    credential = ManagedIdentityCredential(endpoint=e.url, cache=cache)
    first = credential.get_token(ARM)
    e.faults({"kind": "status", "status": 500})
    clock.advance(3)
    # Due: this hit hands the refresh to the background refresher, whose request fails.
    assert credential.get_token(ARM).token == first.token
    wait_until(lambda: e.stats()["statuses"].get("500", 0) >= 1, "the refresh request")
    for _ in range(4):
        assert credential.get_token(ARM).token == first.token, "valid token kept"
    assert e.stats()["tokens_minted"] == 1, "no token came from the failed refresh"
    e.faults()
    e.post("/control/advance?secs=100")  # the emulator re-mints: under 5 min left there
    clock.advance(1)  # past the eager retry of the failed refresh
    wait_until(lambda: credential.get_token(ARM).token != first.token, "the renewed token")
    assert cache.stats()["refreshes"] >= 1


def test_single_flight_16_threads(emulator_factory: Any) -> None:
    e = emulator_factory()
    e.faults({"kind": "delay", "ms": 200})
    cache = TokenCache()
    tokens: List[str] = []
    barrier = threading.Barrier(16)

    def ask() -> None:
        credential = ManagedIdentityCredential(endpoint=e.url, cache=cache)
        barrier.wait()
        tokens.append(credential.get_token(ARM).token)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tokens) == 16 and len(set(tokens)) == 1
    assert e.requests() == 1
    assert cache.stats()["coalesced"] >= 1


def test_1000_credentials_for_1000_identities(emulator_factory: Any) -> None:
    e = emulator_factory("--identities", "1000", "--rate", "500", "--concurrency", "16")
    cache = TokenCache(rate=125, rate_window_s=0.25, in_flight=16)
    credentials = [
        ManagedIdentityCredential(client_id=e.user(i)["client_id"], endpoint=e.url, cache=cache)
        for i in range(1, 1001)
    ]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda c: c.get_token(STORAGE).token, credentials))
    assert len(set(tokens)) == 1000
    stats = e.stats()
    assert stats["requests"] == 1000 and stats["sent_429"] == 0
    assert all(c.get_token(STORAGE).token == t for c, t in zip(credentials, tokens))
    assert e.requests() == 1000


def test_the_gil_is_released_while_waiting(emulator_factory: Any) -> None:
    e = emulator_factory()
    e.faults({"kind": "delay", "ms": 200})
    credential = ManagedIdentityCredential(endpoint=e.url, cache=TokenCache())
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.02)
    before = ticks
    started = time.monotonic()
    credential.get_token(ARM)
    waited = time.monotonic() - started
    during = ticks - before
    stop.set()
    spinner.join()
    assert waited >= 0.2
    # Python ran on the other thread the whole time: thousands of loop turns, not a
    # switch interval's worth.
    assert during > 10_000, during


def test_a_dead_proxy_changes_nothing(imds: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    token = ManagedIdentityCredential(cache=TokenCache()).get_token(ARM)
    assert imds.issued(token.token) is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_keeps_serving(imds: Emulator) -> None:
    cache = TokenCache()
    credential = ManagedIdentityCredential(cache=cache)
    token = credential.get_token(ARM)
    # A miss in flight on another thread while we fork: the child must not inherit its lock.
    imds.faults({"kind": "delay", "ms": 300, "count": 1})
    other = threading.Thread(target=lambda: ManagedIdentityCredential(cache=cache).get_token(STORAGE))
    other.start()
    wait_until(lambda: imds.stats()["current_concurrency"] >= 1, "the miss at the emulator")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = False
        try:
            same = credential.get_token(ARM).token == token.token
            fresh = ManagedIdentityCredential(cache=cache).get_token(VAULT).token
            storage = ManagedIdentityCredential(cache=cache).get_token(STORAGE).token
            ok = same and bool(fresh) and bool(storage)
        finally:
            os._exit(0 if ok else 1)
    other.join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert credential.get_token(ARM) is token


def test_logging_never_shows_a_token(imds: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="imds_cache")
    cache = TokenCache()
    credential = ManagedIdentityCredential(cache=cache)
    token = credential.get_token(ARM)
    credential.get_token(ARM, claims="{}")
    with pytest.raises(CredentialUnavailableError):
        ManagedIdentityCredential(client_id="11111111-2222-3333-4444-555555555555", cache=cache).get_token(ARM)
    records = [r for r in caplog.records if r.name == "imds_cache"]
    assert any("got token" in r.getMessage() for r in records)
    assert any(r.levelno == logging.WARNING for r in records)
    for r in records:
        for t in imds.tokens():
            assert t["token"] not in r.getMessage()
            assert t["token"][:64] not in r.getMessage()
    assert token.token not in caplog.text


def _records(caplog: pytest.LogCaptureFixture) -> List[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "imds_cache"]


def _assert_no_token(records: List[logging.LogRecord], e: Emulator) -> None:
    tokens = [t["token"] for t in e.tokens()]
    assert tokens
    for r in records:
        texts = [r.getMessage(), repr(r.args), str(r.msg)]
        for t in tokens:
            for text in texts:
                assert t not in text and t[:64] not in text


def _has(records: List[logging.LogRecord], level: int, *parts: str) -> bool:
    return any(r.levelno == level and all(p in r.getMessage() for p in parts) for r in records)


def test_logging_of_requests_retries_and_tokens(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="imds_cache")
    e = emulator_factory("--identities", "1")
    e.faults({"kind": "status", "status": 503, "count": 1})
    user = e.user(1)["client_id"]
    token = ManagedIdentityCredential(client_id=user, endpoint=e.url, cache=quick()).get_token(ARM)
    assert e.issued(token.token) is not None
    records = _records(caplog)
    who = f"client_id={user}, {ARM}"
    assert _has(records, logging.DEBUG, "request for", who, "(attempt 1)"), records
    assert _has(records, logging.INFO, "request for", who, "503", "retrying in"), records
    assert _has(records, logging.DEBUG, "request for", who, "(attempt 2)"), records
    assert _has(records, logging.DEBUG, "token received for", who, "expires_on="), records
    assert _has(records, logging.DEBUG, "got token for"), "the credential's own record stays"
    _assert_no_token(records, e)
    assert token.token not in caplog.text


def test_logging_of_the_asyncio_path(emulator_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from imds_cache import aio

    caplog.set_level(logging.DEBUG, logger="imds_cache")
    e = emulator_factory()
    e.faults({"kind": "status", "status": 503, "count": 1})

    async def main() -> str:
        async with aio.ManagedIdentityCredential(endpoint=e.url, cache=quick()) as credential:
            return (await credential.get_token(VAULT)).token

    token = asyncio.run(main())
    records = _records(caplog)
    who = f"system-assigned, {VAULT}"
    assert _has(records, logging.DEBUG, "request for", who, "(attempt 1)"), records
    assert _has(records, logging.INFO, "request for", who, "503", "retrying in"), records
    assert _has(records, logging.DEBUG, "token received for", who), records
    # Told on the driver's worker thread, not the event loop's.
    loop_thread = threading.get_ident()
    assert all(r.thread != loop_thread for r in records if "(attempt" in r.getMessage())
    _assert_no_token(records, e)
    assert token not in caplog.text


def test_logging_of_throttling_failures_and_refreshes(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="imds_cache")
    e = emulator_factory("--token-lifetime", "362", "--identities", "1")
    # One request start per second: a burst of three keys waits for the budget.
    cache = quick(rate=1, rate_window_s=1.0, refresh_margin_s=360, min_lifetime_s=1)
    ok, total, errors = cache.prefetch([None], [ARM, VAULT, STORAGE], endpoint=e.url)
    assert (ok, total, errors) == (3, 3, [])
    assert _has(_records(caplog), logging.INFO, "throttled", "system-assigned", "request budget")
    # The background refresher's work, logged from its thread: a refresh is due ~2 s after
    # the fetch, and a hit then hands it to the refresher.
    deadline = time.monotonic() + 15
    while not _has(_records(caplog), logging.DEBUG, "refresh token received for system-assigned"):
        assert time.monotonic() < deadline, "no refresh logged"
        time.sleep(0.1)
        assert cache.prefetch([None], [ARM], endpoint=e.url)[0] == 1
    assert _has(_records(caplog), logging.DEBUG, "background refresh of system-assigned")
    assert _has(_records(caplog), logging.DEBUG, "refresh request for system-assigned")
    # A terminal failure is a WARNING.
    e.faults({"kind": "status", "status": 403})
    with pytest.raises(ManagedIdentityError):
        ManagedIdentityCredential(client_id=e.user(1)["client_id"], endpoint=e.url, cache=cache).get_token(ARM)
    assert _has(_records(caplog), logging.WARNING, "request for", e.user(1)["client_id"], "403")
    _assert_no_token(_records(caplog), e)


def test_logging_is_quiet_at_the_default_level(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="imds_cache")
    e = emulator_factory()
    e.faults({"kind": "status", "status": 503, "count": 1})
    ManagedIdentityCredential(endpoint=e.url, cache=quick()).get_token(ARM)
    assert _records(caplog) == []


def test_errors_carry_code_and_description_and_no_token(emulator_factory: Any) -> None:
    e = emulator_factory()
    ManagedIdentityCredential(endpoint=e.url, cache=TokenCache()).get_token(ARM)
    e.faults({"kind": "status", "status": 500})
    with pytest.raises(ManagedIdentityError) as caught:
        ManagedIdentityCredential(endpoint=e.url, cache=quick(deadline_s=0.5, backoff_s=0.05)).get_token(VAULT)
    error = caught.value
    assert error.code == "deadline" and "server" in error.description.lower() or "500" in error.description
    for text in (str(error), repr(error), error.description, error.message):
        for t in e.tokens():
            assert t["token"] not in text
