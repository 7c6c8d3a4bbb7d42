"""The ``imds-cache`` command line: tokens, one line per failure, ``--timeout``, Ctrl-C,
and a ``--help`` that says how the endpoint is chosen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest

from conftest import ARM, ENDPOINT_VARS, VAULT, Emulator

SCRIPT = Path(sys.executable).parent / "imds-cache"


def cli(*args: str, timeout: float = 30) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "imds_cache", *args],
        env=dict(os.environ), capture_output=True, text=True, timeout=timeout,
    )


def test_tokens_as_az_prints_them(imds: Emulator) -> None:
    assert SCRIPT.exists(), "the console script is installed"
    out = subprocess.run(
        [str(SCRIPT), "token", "--resource", ARM, "--json"],
        env=dict(os.environ), capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    data = json.loads(out)
    issued = imds.issued(data["accessToken"])
    assert issued is not None and data["expires_on"] == issued["exp"] and data["tokenType"] == "Bearer"
    user = imds.user(3)
    out = cli("token", "--resource", VAULT, "--object-id", user["object_id"]).stdout.strip()
    issued = imds.issued(out)
    assert issued is not None and issued["client_id"] == user["client_id"]


def test_a_failure_is_one_line_naming_the_endpoint_and_identity(imds: Emulator) -> None:
    unknown = "11111111-2222-3333-4444-555555555555"
    bad = cli("token", "--resource", ARM, "--client-id", unknown)
    lines: List[str] = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and len(lines) == 1, bad.stderr
    assert "Identity not found" in lines[0]
    assert imds.url.removeprefix("http://") in lines[0] and unknown in lines[0]
    assert lines[0].count("400") == 1, lines[0]
    assert bad.stdout == ""


def test_usage_errors_exit_2() -> None:
    assert cli("token").returncode == 2
    assert cli("token", "--resource", ARM, "--timeout", "0").returncode == 2


def test_timeout_bounds_a_hanging_endpoint(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    e: Emulator = emulator_factory()
    e.faults({"kind": "hang"})
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", e.url)
    out = cli("token", "--resource", ARM, "--timeout", "1.5")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "deadline" in lines[0], out.stderr


def test_ctrl_c_exits_130_without_a_traceback(emulator_factory: Any) -> None:
    e: Emulator = emulator_factory()
    e.faults({"kind": "hang"})
    env = dict(os.environ, AZURE_POD_IDENTITY_AUTHORITY_HOST=e.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imds_cache", "token", "--resource", ARM],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Interrupt once the request is at the emulator (bounded: 300 polls).
        for _ in range(300):
            if e.requests() >= 1:
                break
            time.sleep(0.05)
        assert e.requests() >= 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == ["imds-cache: interrupted"]


def test_help_lists_the_variables_that_choose_the_endpoint() -> None:
    for args in (["--help"], ["token", "--help"]):
        text = cli(*args).stdout
        for name in ENDPOINT_VARS:
            if name not in ("DEFAULT_IDENTITY_CLIENT_ID", "AZURE_CLIENT_ID"):
                assert name in text, (args, name)
        assert "--timeout" in text or args == ["--help"]
