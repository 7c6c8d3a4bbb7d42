"""Interpreter exit with the cache busy: each scenario runs in fresh interpreters, many times,
under CPU load, and fails on any abnormal exit.

pytest runs in one long process and never finalizes an interpreter, so a driver thread that
touches Python during finalization (and aborts the process) is only seen here. The scenarios
leave work in flight at exit: fetches still on the worker pool whose answers would go to a
closed event loop or to logging, the background refresher, caches alive as module globals.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, List

import pytest

from conftest import Emulator

RUNS = int(os.environ.get("IMDS_CACHE_EXIT_RUNS", "24"))

# Every scenario logs at DEBUG (driver threads take the GIL to log) and ends with fetches
# still running: the emulator delays each answer by 30 ms.
PRELUDE = """
import logging, os, sys
logging.basicConfig(level=logging.DEBUG, stream=open(os.devnull, "w"))
ENDPOINT = os.environ["EXIT_TEST_ENDPOINT"]
SCOPES = [f"https://r{i}.example/.default" for i in range(12)]
"""

ASYNCIO = """
import asyncio
from imds_cache import TokenCache
from imds_cache.aio import ManagedIdentityCredential

credential = ManagedIdentityCredential(endpoint=ENDPOINT, cache=TokenCache())

async def main():
    tokens = await asyncio.gather(*(credential.get_token(SCOPES[i % 4]) for i in range(50)))
    assert len(tokens) == 50
    # Started and left behind: asyncio.run cancels them while the pool still fetches.
    for scope in SCOPES[4:]:
        asyncio.ensure_future(credential.get_token(scope))
    await asyncio.sleep(0)

asyncio.run(main())
print("done")
"""

SYNC = """
import threading
from imds_cache import ManagedIdentityCredential

credential = ManagedIdentityCredential(endpoint=ENDPOINT)

def ask(scope):
    try:
        credential.get_token(scope)
    except Exception:
        pass

threads = [threading.Thread(target=ask, args=(SCOPES[i % 12],), daemon=True) for i in range(24)]
for t in threads:
    t.start()
threads[0].join()
print("done")
"""

CACHES = """
from imds_cache import ManagedIdentityCredential, TokenCache

CACHES = [TokenCache() for _ in range(3)]
CREDENTIALS = [ManagedIdentityCredential(endpoint=ENDPOINT, cache=c) for c in CACHES]
CREDENTIALS[0].get_token(SCOPES[0])
for i, credential in enumerate(CREDENTIALS):
    credential.cache.prefetch([None], SCOPES[1 + i * 3 : 4 + i * 3], timeout_s=0.001)
print("done")
"""


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Two processes that spin for at most 5 minutes: a loaded machine, as users have."""
    burners = [
        subprocess.Popen(
            [sys.executable, "-c", "import time\nt=time.time()+300\nwhile time.time()<t: pass"]
        )
        for _ in range(2)
    ]
    try:
        yield
    finally:
        for b in burners:
            b.kill()
            b.wait()


def run_many(script: str, endpoint: str) -> List[str]:
    """Runs `script` RUNS times, four at a time; returns a line per abnormal run."""
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(script)
    env = dict(os.environ, EXIT_TEST_ENDPOINT=endpoint)

    def once(_: int) -> str:
        try:
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            return "hung at exit (60 s)"
        if out.returncode != 0 or out.stdout.strip() != "done" or "Fatal Python" in out.stderr:
            return f"exit {out.returncode}: {out.stderr.strip()[-400:]}"
        return ""

    with ThreadPoolExecutor(4) as pool:
        return [r for r in pool.map(once, range(RUNS)) if r]


@pytest.mark.parametrize("script", [ASYNCIO, SYNC, CACHES], ids=["asyncio", "sync", "caches"])
def test_exit_with_work_in_flight_never_crashes(
    script: str, emulator_factory: Any, busy_machine: None
) -> None:
    e: Emulator = emulator_factory()
    e.faults({"kind": "delay", "ms": 30})
    failures = run_many(script, e.url)
    assert not failures, f"{len(failures)} of {RUNS} runs ended abnormally: {failures[:3]}"
    # The runs really fetched (the scenarios are not vacuous).
    assert e.requests() >= RUNS
