"""Sharing the host's table (``share="host"``): processes make one request per key between
them, and a token dropped in one process is gone for the next call in every other, the
credentials' memo included. Each child is a fresh interpreter, run with a timeout."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

import imds_cache
from conftest import ARM, STORAGE, VAULT, Emulator

CHILD = textwrap.dedent(
    """
    import sys
    import imds_cache
    share_dir, action, scopes = sys.argv[1], sys.argv[2], sys.argv[3:]
    cache = imds_cache.TokenCache(share="host", share_dir=share_dir)
    credential = imds_cache.ManagedIdentityCredential(cache=cache)
    for scope in scopes:
        token = credential.get_token(scope).token
        if action == "drop":
            credential._binding.invalidate(scope)
    print(len(token))
    """
)


def children(share_dir: Path, action: str, scopes: List[str], count: int = 1) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(share_dir), action, *scopes],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            assert int(out) > 1000
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def share_dir(tmp_path: Path) -> Path:
    d = tmp_path / "share"
    d.mkdir(mode=0o700)
    return d


def test_processes_make_one_request_per_key(imds: Emulator, share_dir: Path) -> None:
    children(share_dir, "get", [ARM, VAULT, STORAGE], count=4)
    assert imds.requests() == 3
    # This process joins the same table: hits.
    cache = imds_cache.TokenCache(share="host", share_dir=str(share_dir))
    credential = imds_cache.ManagedIdentityCredential(cache=cache)
    token = credential.get_token(VAULT).token
    assert imds.issued(token) is not None
    assert imds.requests() == 3


def test_a_token_dropped_in_another_process_is_gone_here(
    imds: Emulator, share_dir: Path
) -> None:
    cache = imds_cache.TokenCache(share="host", share_dir=str(share_dir))
    credential = imds_cache.ManagedIdentityCredential(cache=cache)
    credential.get_token(ARM)
    credential.get_token(ARM)
    assert imds.requests() == 1
    children(share_dir, "drop", [ARM])
    assert imds.requests() == 1, "the child's read was a hit"
    credential.get_token(ARM)
    assert imds.requests() == 2, "this credential asked the table, not its memo"


def test_sharing_comes_from_the_environment_and_bad_files_fall_back(
    imds: Emulator, share_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IMDS_CACHE_SHARE", "host")
    monkeypatch.setenv("IMDS_CACHE_DIR", str(share_dir))
    imds_cache.ManagedIdentityCredential(cache=imds_cache.TokenCache()).get_token(ARM)
    assert [p.name for p in share_dir.iterdir() if p.name.startswith("table-")]
    os.chmod(share_dir, 0o777)
    with caplog.at_level(logging.WARNING, logger="imds_cache"):
        credential = imds_cache.ManagedIdentityCredential(cache=imds_cache.TokenCache())
        assert credential.get_token(VAULT).token
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0777" in warnings[0], warnings
    with pytest.raises(ValueError):
        imds_cache.TokenCache(share="cluster")
