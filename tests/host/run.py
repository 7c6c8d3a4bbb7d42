#!/usr/bin/env python3
"""Host sharing across processes (Share::Host): Rust, C and Python workers against one bundled
IMDS emulator at IMDS's real limits (20 request starts per second, 5 in flight).

    python3 tests/host/run.py demo
    python3 tests/host/run.py torture --processes N --seconds S [--seed X]

demo (the host phase of `make demo`, `make host-demo`): 8 worker processes (3 Rust, 3 Python,
2 C; 4 threads each) warm 20 user-assigned identities x 3 resources, all released at the same
instant, three times, each against a fresh emulator: with --share process (each process its own
table and budget), with --share host (one table and one budget in a fresh 0700 directory), and
as Python workers over azure-identity (for BENCHMARKS.md). Prints a table; exits 0 only when
the shared run made exactly one request per key and no 429 (and every call of it returned a
token the emulator issued for that key). The other two rows are informational: their 429s are
the point (a budget per process is no budget for the host).

torture (`make host-torture`, `make host-torture-long`): N workers of mixed languages in loop
mode with --share host over 10 identities x 3 resources (deadline 20 s per call), while the
emulator injects transient, retried faults at the start (503s, 500s, connection resets, slow
answers) and the driver SIGKILLs workers (starting a new one in each one's place) and
SIGSTOPs others for up to 2 s, at seeded random times. Then checks: every token a call
returned is one the emulator issued for exactly that (client id, resource); answers 200 per key
<= 1 + the kills' and stops' allowance; the emulator saw at most rate (20) arrivals per
window and at most 5 in flight, and sent no 429; no call failed or overran its deadline; every
worker not killed stopped by itself and reported DONE; none fell back to a cache of its own.

Only loopback is ever spoken to: the emulator binds 127.0.0.1, every worker gets its URL in
AZURE_POD_IDENTITY_AUTHORITY_HOST (and refuses any other), proxies and other managed-identity
variables are removed from the workers' environment. Every process started here is stopped
here, on failure too, and every run is bounded in time. Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
EMULATOR = os.environ.get("EMULATOR") or os.path.join(TARGET, "release", "imds-emulator")
RUST_WORKER = os.path.join(TARGET, "release", "examples", "host_worker")
C_WORKER = os.path.join(TARGET, "c", "host_worker")
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
PY_WORKER = os.path.join(ROOT, "python", "examples", "host_worker.py")
RESOURCES = ["https://management.azure.com", "https://vault.azure.net", "https://storage.azure.com"]
# IMDS's own limits, on the emulator; the clients' defaults are the same.
LIMITS = ["--rate", "20", "--concurrency", "5"]
# How a worker is told the endpoint, in turn: from the environment as an application finds
# it, and as an explicit authority; both must name the same table and budget.
ENDPOINT_FORMS = ["env", "explicit"]
# The line a client prints (Rust, C) or logs (Python) when it cannot share and keeps its own.
NOT_SHARED = "host sharing is off"
# Variables that could send a worker anywhere but the emulator.
SCRUB_PREFIXES = ("IDENTITY_", "MSI_", "IMDS_", "AZURE_", "DEFAULT_IDENTITY_CLIENT_ID")
SCRUB_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---- the emulator -------------------------------------------------------------------------


class Emulator:
    """imds-emulator on 127.0.0.1 with a free port; stop() always ends and reaps it."""

    def __init__(self, args: List[str], workdir: str, name: str) -> None:
        if not os.access(EMULATOR, os.X_OK):
            raise SystemExit(f"{EMULATOR} is missing (cargo build --release -p imds-emulator)")
        self.err_path = os.path.join(workdir, f"{name}.emulator.err")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [EMULATOR, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
        )
        self.url = ""
        first: List[bytes] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(10)
        line = first[0].decode().strip() if first else ""
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"emulator did not start (first line {line!r}); see {self.err_path}")
        self.url = line
        self.port = int(line.rsplit(":", 1)[1].strip("/"))
        # Keep draining stdout so the emulator never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def control(self, method: str, path: str, body: Optional[bytes] = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"emulator {method} {path}: HTTP {r.status} {data[:200]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def client_ids(self) -> List[str]:
        listed = self.control("GET", "/control/identities")["identities"]
        return [i["client_id"] for i in listed if i["kind"] == "user_assigned"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()


# ---- workers ------------------------------------------------------------------------------


def worker_env(url: str, share_dir: Optional[str]) -> Dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(SCRUB_PREFIXES) and k.lower() not in SCRUB_PROXIES
    }
    env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("IMDS_CACHE_SHARE", None)
    if share_dir:
        env["IMDS_CACHE_DIR"] = share_dir
    return env


def worker_command(kind: str) -> List[str]:
    if kind == "rust":
        return [RUST_WORKER]
    if kind == "c":
        return [C_WORKER]
    if kind == "python":
        return [VENV_PY, PY_WORKER]
    if kind == "peer":
        return [VENV_PY, PY_WORKER, "--peer", "azure-identity"]
    raise ValueError(kind)


def check_workers_built(kinds: Set[str]) -> None:
    missing = [
        p
        for k, p in (("rust", RUST_WORKER), ("c", C_WORKER), ("python", VENV_PY), ("peer", VENV_PY))
        if k in kinds and not os.access(p, os.X_OK)
    ]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (make host-workers builds them)")


@dataclass
class Worker:
    """One worker process and what its stdout said, parsed as it comes (nothing is stored
    per call but counters: a long torture prints millions of lines)."""

    name: str
    kind: str
    proc: subprocess.Popen  # type: ignore[type-arg]
    err_path: str
    deadline_ms: float
    started: float = field(default_factory=time.monotonic)
    calls: int = 0
    errors: List[str] = field(default_factory=list)
    error_count: int = 0
    seen: collections.Counter = field(default_factory=collections.Counter)  # type: ignore[type-arg]
    max_ms: float = 0.0
    slow: int = 0  # calls over 1 s
    over_deadline: int = 0
    malformed: List[str] = field(default_factory=list)
    done: Optional[Tuple[int, int]] = None
    killed: bool = False
    stopped_ever: bool = False
    stopped_now: bool = False
    stop_total_s: float = 0.0
    late_ms: List[float] = field(default_factory=list)
    reader: Optional[threading.Thread] = None

    def read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            parts = line.split(" ")
            try:
                if parts[0] == "CALL" and len(parts) == 5:
                    ms = float(parts[4])
                    int(parts[3], 16)
                    self.calls += 1
                    self.seen[(parts[1], parts[2], parts[3])] += 1
                    self.max_ms = max(self.max_ms, ms)
                    self.slow += ms > 1000
                    if ms > self.deadline_ms:
                        self.over_deadline += 1
                        self.late_ms.append(ms)
                    continue
                if parts[0] == "ERR" and len(parts) >= 5:
                    ms = float(parts[3])
                    self.calls += 1
                    self.error_count += 1
                    if ms > self.deadline_ms:
                        self.over_deadline += 1
                        self.late_ms.append(ms)
                    if len(self.errors) < 20:
                        self.errors.append(line)
                    continue
                if parts[0] == "DONE" and len(parts) == 3:
                    self.done = (int(parts[1]), int(parts[2]))
                    continue
            except ValueError:
                pass
            if len(self.malformed) < 20:
                self.malformed.append(line[:200])

    def stderr_text(self) -> str:
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def not_shared(self) -> bool:
        return NOT_SHARED in self.stderr_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def end(self, timeout: float) -> bool:
        """Waits up to `timeout` for the worker to exit by itself; True if it did. Kills it
        otherwise. Reaps it and lets its reader finish either way."""
        by_itself = True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            by_itself = False
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.proc.wait()
        if self.reader is not None:
            self.reader.join(10)
        return by_itself


def start_worker(
    name: str,
    kind: str,
    url: str,
    share: str,
    share_dir: Optional[str],
    client_ids: List[str],
    workdir: str,
    mode: str,
    threads: int,
    deadline_s: float,
    seconds: float = 0,
    pause_ms: Optional[float] = None,
    seed: Optional[int] = None,
    start_at_ms: Optional[int] = None,
    endpoint: str = "env",
) -> Worker:
    args = worker_command(kind) + [
        "--share", share,
        "--client-ids", ",".join(client_ids),
        "--resources", ",".join(RESOURCES),
        "--threads", str(threads),
        "--mode", mode,
        "--deadline-s", str(deadline_s),
    ]  # fmt: skip
    if kind != "peer":
        args += ["--endpoint", endpoint]
    if share_dir:
        args += ["--dir", share_dir]
    if mode == "loop":
        args += ["--seconds", f"{seconds:.3f}"]
    if pause_ms is not None:
        args += ["--pause-ms", str(pause_ms)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if start_at_ms is not None:
        args += ["--start-at", str(start_at_ms)]
    err_path = os.path.join(workdir, f"{name}.err")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=worker_env(url, share_dir),
            cwd=ROOT,
        )
    w = Worker(name=name, kind=kind, proc=proc, err_path=err_path, deadline_ms=deadline_s * 1000)
    w.reader = threading.Thread(target=w.read, daemon=True)
    w.reader.start()
    return w


def valid_tokens(emu: Emulator) -> Dict[str, Tuple[str, str]]:
    """fnv1a64 hex of every token the emulator issued -> its (client id, resource)."""
    out: Dict[str, Tuple[str, str]] = {}
    for t in emu.control("GET", "/control/tokens"):
        out[f"{fnv1a64(t['token'].encode()):016x}"] = (t["client_id"], t["resource"])
    return out


def verify_tokens(
    workers: List[Worker], issued: Dict[str, Tuple[str, str]]
) -> Tuple[int, int, List[str]]:
    """(calls checked, bad calls, examples): a hash the emulator never issued is torn or
    invented; one issued for another key is foreign."""
    checked = bad = 0
    examples: List[str] = []
    for w in workers:
        for (cid, res, h), n in w.seen.items():
            checked += n
            owner = issued.get(h)
            if owner == (cid, res):
                continue
            bad += n
            what = "torn or unknown token" if owner is None else f"token of {owner[0]} {owner[1]}"
            if len(examples) < 10:
                examples.append(f"{w.name}: {n} call(s) for {cid} {res} returned a {what} ({h})")
    return checked, bad, examples


def stop_all(workers: List[Worker]) -> None:
    for w in workers:
        if w.alive():
            w.signal(signal.SIGCONT)
            w.signal(signal.SIGKILL)
    for w in workers:
        try:
            w.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if w.reader is not None:
            w.reader.join(5)


# ---- demo ---------------------------------------------------------------------------------


@dataclass
class Row:
    mode: str
    stats: Dict[str, Any]
    keys: int
    wall_s: float
    calls: int
    failed: int
    unfinished: int
    bad_tokens: int
    not_shared: int
    notes: List[str]


def demo_run(
    label: str,
    kinds: List[str],
    share: str,
    workdir: str,
    identities: int,
    threads: int,
    deadline_s: float,
    bound_s: float,
) -> Row:
    emu = Emulator(["--identities", str(identities), *LIMITS], workdir, label)
    workers: List[Worker] = []
    share_dir = tempfile.mkdtemp(prefix="imds-host-", dir=workdir) if share == "host" else None
    try:
        if share_dir:
            os.chmod(share_dir, 0o700)
        client_ids = emu.client_ids()
        keys = len(client_ids) * len(RESOURCES)
        # Every process is released at the same instant, after the slowest start-up.
        start_at_ms = int(time.time() * 1000) + 3000
        for i, kind in enumerate(kinds):
            workers.append(
                start_worker(
                    f"{label}-{i}-{kind}", kind, emu.url, share, share_dir, client_ids, workdir,
                    "warm", threads, deadline_s, seed=1000 + i, start_at_ms=start_at_ms,
                    endpoint=ENDPOINT_FORMS[i % 2],
                )
            )  # fmt: skip
        release = time.monotonic() + max(0.0, start_at_ms / 1000 - time.time())
        unfinished = 0
        hard_end = release + bound_s
        for w in workers:
            if not w.end(max(0.0, hard_end - time.monotonic())):
                unfinished += 1
        wall = max(0.0, time.monotonic() - release)
        stats = emu.control("GET", "/control/stats")
        issued = valid_tokens(emu)
        checked, bad, examples = verify_tokens(workers, issued)
        notes = examples
        for w in workers:
            if w.errors:
                notes.append(f"{w.name}: {w.error_count} failed call(s), e.g. {w.errors[0][:300]}")
            if w.malformed:
                notes.append(f"{w.name}: malformed output {w.malformed[0]!r}")
            if w.done is None and w.proc.returncode not in (0, 1):
                notes.append(f"{w.name}: exit {w.proc.returncode}, no DONE; stderr: {w.stderr_text()[-300:]!r}")
        if unfinished:
            notes.append(f"{unfinished} worker(s) still running after {bound_s:.0f} s were killed")
        return Row(
            mode=label,
            stats=stats,
            keys=keys,
            wall_s=wall,
            calls=sum(w.calls for w in workers),
            failed=sum(w.error_count for w in workers),
            unfinished=unfinished,
            bad_tokens=bad,
            not_shared=sum(w.not_shared() for w in workers),
            notes=notes,
        )
    finally:
        stop_all(workers)
        emu.stop()


def per_key(row: Row) -> str:
    counts = [k["requests"] for k in row.stats["keys"]]
    if not counts:
        return "-"
    missing = row.keys - len(counts)
    mean = row.stats["requests"] / row.keys
    text = f"{mean:.2f} ({min(counts) if not missing else 0}-{max(counts)})"
    return text


def print_table(rows: List[Row]) -> None:
    head = ["mode", "requests", "per key: all (served min-max)", "429s", "max arrivals/1 s",
            "max in flight", "wall (s)", "calls", "failed"]  # fmt: skip
    body = [
        [
            r.mode,
            str(r.stats["requests"]),
            per_key(r),
            str(r.stats["sent_429"]),
            str(r.stats["max_window_arrivals"]),
            str(r.stats["max_concurrency"]),
            f"{r.wall_s:.2f}" + ("+" if r.unfinished else ""),
            str(r.calls),
            str(r.failed),
        ]
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for b in body:
        print(line(b))


def demo(args: argparse.Namespace) -> int:
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or any(k not in ("rust", "python", "c") for k in kinds):
        raise SystemExit("--kinds: a comma-separated list of rust, python, c")
    modes = [m for m in args.modes.split(",") if m]
    if "host" not in modes or any(m not in ("process", "host", "peer") for m in modes):
        raise SystemExit("--modes: a comma-separated list of process, host, peer; with host")
    check_workers_built(set(kinds) | ({"peer"} if "peer" in modes else set()))
    n = len(kinds)
    mix = ", ".join(f"{kinds.count(k)} {k}" for k in ("rust", "python", "c") if k in kinds)
    keys = args.identities * len(RESOURCES)
    print(
        f"== host phase: {n} processes ({mix}; {args.threads} threads each) warm "
        f"{args.identities} identities x {len(RESOURCES)} resources = {keys} keys, all released "
        f"at once, against an emulator at IMDS's limits (20 starts/s, 5 in flight)"
    )
    workdir = tempfile.mkdtemp(prefix="imds-host-demo-")
    rows: List[Row] = []
    try:
        plan = [
            ("own cache per process", kinds, "process", args.deadline_s, args.bound_s),
            ("one host cache", kinds, "host", args.deadline_s, args.bound_s),
            ("azure-identity", ["peer"] * n, "process", args.deadline_s, args.peer_bound_s),
        ]
        chosen = {"process": 0, "host": 1, "peer": 2}
        plan = [plan[chosen[m]] for m in ("process", "host", "peer") if m in modes]
        for label, ks, share, deadline_s, bound_s in plan:
            print(f"  running: {label} ...", flush=True)
            rows.append(
                demo_run(label, ks, share, workdir, args.identities, args.threads, deadline_s, bound_s)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(rows)
    for r in rows:
        for note in r.notes[:6]:
            print(f"  note ({r.mode}): {note}")
    shared = next(r for r in rows if r.mode == "one host cache")
    s = shared.stats
    per_key_ok = len(s["keys"]) == shared.keys and all(k["requests"] == 1 for k in s["keys"])
    checks = [
        (f"shared run: exactly one request per key ({s['requests']} for {shared.keys})",
         s["requests"] == shared.keys and per_key_ok),
        (f"shared run: no 429 ({s['sent_429']})", s["sent_429"] == 0),
        (f"shared run: every call returned a token ({shared.calls} calls, {shared.failed} failed)",
         shared.failed == 0 and shared.unfinished == 0 and shared.calls == n * args.threads * shared.keys),
        (f"shared run: every token was issued for its key ({shared.bad_tokens} not)",
         shared.bad_tokens == 0),
        (f"shared run: every process shared the host's table ({shared.not_shared} fell back)",
         shared.not_shared == 0),
    ]  # fmt: skip
    print()
    good = True
    for what, held in checks:
        print(f"  [{'ok' if held else 'FAILED'}] {what}")
        good &= held
    if good:
        print(f"host phase: shared run made {s['requests']} requests for {shared.keys} keys, "
              f"{s['sent_429']} \u00d7 429")  # fmt: skip
    else:
        print(f"[FAILED] host phase: shared run made {s['requests']} requests for {shared.keys} "
              f"keys, {s['sent_429']} \u00d7 429")  # fmt: skip
    return 0 if good else 1


# ---- torture ------------------------------------------------------------------------------

# Transient faults, each retried by the clients within a call: the first requests get them
# (rules apply in order, each to its count of requests), i.e. the fetches of the warm-up,
# when the kills and stops of the first seconds land. Only faults answered with a status other
# than 200 (or a reset) make a retry: the per-key check counts 200s. No 429 among them: the
# run asserts that no 429 was ever sent.
FAULTS = [
    "kind=status,status=503,count=4",
    "kind=delay,ms=1500,count=3",
    "kind=reset,count=3",
    "kind=status,status=500,count=2",
    "kind=delay,ms=800,count=3",
    "kind=status,status=503,count=2",
]


def torture(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % 1_000_000
    rng = random.Random(seed)
    kinds_cycle = ["rust", "c", "python"]
    check_workers_built(set(kinds_cycle))
    S = float(args.seconds)
    deadline_s = args.deadline_s
    workdir = tempfile.mkdtemp(prefix="imds-host-torture-")
    share_dir = os.path.join(workdir, "share")
    os.mkdir(share_dir, 0o700)
    os.chmod(share_dir, 0o700)
    faults = [] if args.no_faults else FAULTS
    fault_args: List[str] = []
    for f in faults:
        fault_args += ["--fault", f]
    n_kills = max(2, round(S / 6)) if args.kills is None else args.kills
    n_stops = max(2, round(S / 6)) if args.stops is None else args.stops
    # The first kill and stop land in the warm-up (fetches in flight, faults being retried);
    # the others anywhere before the last two seconds.
    kill_at = [rng.uniform(0.3, 2.5)] + [rng.uniform(1.0, S - 2) for _ in range(n_kills - 1)]
    stop_at = [rng.uniform(0.3, 2.5)] + [rng.uniform(1.0, S - 2) for _ in range(n_stops - 1)]
    kill_at, stop_at = kill_at[:n_kills], stop_at[:n_stops]
    events: List[Tuple[float, str]] = [(t, "kill") for t in kill_at] + [(t, "stop") for t in stop_at]
    events.sort()
    print(
        f"== host torture: {args.processes} workers (rust, c, python in turn; {args.threads} "
        f"threads, loop mode, --share host) x {S:.0f} s over 10 identities x {len(RESOURCES)} "
        f"resources, deadline {deadline_s:.0f} s per call, seed {seed}; {n_kills} kills, "
        f"{n_stops} stops (<= 2 s); faults: {'; '.join(faults) or 'none'}",
        flush=True,
    )
    emu: Optional[Emulator] = None
    workers: List[Worker] = []
    kills = stops = 0
    stopped_until: Dict[int, float] = {}
    try:
        emu = Emulator(["--identities", "10", *LIMITS, *fault_args], workdir, "torture")
        client_ids = emu.client_ids()
        keys = len(client_ids) * len(RESOURCES)
        t0 = time.monotonic()
        serial = 0

        def spawn(kind: str) -> Worker:
            nonlocal serial
            serial += 1
            remaining = max(1.0, S - (time.monotonic() - t0))
            return start_worker(
                f"w{serial}-{kind}", kind, emu.url, "host", share_dir, client_ids, workdir,
                "loop", args.threads, deadline_s, seconds=remaining, pause_ms=args.pause_ms,
                seed=seed * 1000 + serial, endpoint=ENDPOINT_FORMS[serial % 2],
            )  # fmt: skip

        for i in range(args.processes):
            workers.append(spawn(kinds_cycle[i % len(kinds_cycle)]))
        pending = list(events)
        while True:
            now = time.monotonic() - t0
            # Resume the stopped ones whose time is up.
            for idx, until in list(stopped_until.items()):
                if now >= until:
                    workers[idx].signal(signal.SIGCONT)
                    workers[idx].stopped_now = False
                    del stopped_until[idx]
            if pending and now >= pending[0][0]:
                _, what = pending.pop(0)
                live = [i for i, w in enumerate(workers) if w.alive() and not w.killed]
                if what == "kill" and live:
                    idx = rng.choice(live)
                    w = workers[idx]
                    w.killed = True
                    w.signal(signal.SIGKILL)
                    stopped_until.pop(idx, None)
                    kills += 1
                    print(f"  t={now:5.1f}s SIGKILL {w.name}" + (" (stopped)" if w.stopped_now else ""), flush=True)
                    workers.append(spawn(w.kind))
                elif what == "stop":
                    free = [i for i in live if i not in stopped_until]
                    if free:
                        idx = rng.choice(free)
                        w = workers[idx]
                        length = rng.uniform(0.2, 2.0)
                        w.signal(signal.SIGSTOP)
                        w.stopped_ever = w.stopped_now = True
                        w.stop_total_s += length
                        stopped_until[idx] = now + length
                        stops += 1
                        print(f"  t={now:5.1f}s SIGSTOP {w.name} for {length:.1f} s", flush=True)
                continue
            if now >= S and not stopped_until:
                break
            if now >= S + 5:  # never reached: stops end within 2 s
                break
            next_t = min([S] + [p[0] for p in pending[:1]] + list(stopped_until.values()))
            time.sleep(min(0.05, max(0.0, next_t - now)))
        for idx in list(stopped_until):
            workers[idx].signal(signal.SIGCONT)
            workers[idx].stopped_now = False
        stopped_until.clear()
        # Every worker ends by itself: its last call started before its end, within a deadline.
        hard_end = time.monotonic() + deadline_s + 15
        stragglers = [w.name for w in workers if not w.killed and not w.end(max(0.0, hard_end - time.monotonic()))]
        for w in workers:
            if w.killed:
                w.end(5)
        wall = time.monotonic() - t0
        stats = emu.control("GET", "/control/stats")
        config = emu.control("GET", "/control/config")
        issued = valid_tokens(emu)
    finally:
        stop_all(workers)
        if emu is not None:
            emu.stop()

    try:
        checked, bad, examples = verify_tokens(workers, issued)
        calls = sum(w.calls for w in workers)
        per_key_200 = {(k["client_id"], k["resource"]): k["statuses"].get("200", 0) for k in stats["keys"]}
        per_key_req = {(k["client_id"], k["resource"]): k["requests"] for k in stats["keys"]}
        retried = sum(
            n for k in stats["keys"] for s, n in k["statuses"].items() if s != "200"
        )
        extra_200 = sum(max(0, n - 1) for n in per_key_200.values())
        unfetched = keys - sum(1 for n in per_key_200.values() if n >= 1)
        # A killed or stopped process can hold at most in_flight (5) requests in flight; each
        # can be lost with its process (or outlive a takeover), so each signal may cost at most
        # 5 more answers 200 in all. Faults never do: they are answered with other statuses.
        allowance = 5 * (kills + stops)
        errs_clean = [e for w in workers if not w.stopped_ever for e in w.errors]
        n_errs_clean = sum(w.error_count for w in workers if not w.stopped_ever)
        errs_stopped_bad = [
            e for w in workers if w.stopped_ever for e in w.errors if "deadline" not in e.lower()
        ]
        n_errs_stopped = sum(w.error_count for w in workers if w.stopped_ever)
        over = sum(w.over_deadline for w in workers if not w.stopped_ever)
        # A stopped worker's clock runs on while it is stopped: a call may span a stop.
        over_stopped = sum(
            1
            for w in workers
            if w.stopped_ever
            for ms in w.late_ms
            if ms > w.deadline_ms + w.stop_total_s * 1000 + 500
        )
        no_done = [w.name for w in workers if not w.killed and w.done is None]
        bad_exit = [
            f"{w.name}={w.proc.returncode}"
            for w in workers
            if not w.killed and w.proc.returncode not in (0, 1)
        ]
        malformed = [(w.name, m) for w in workers if not w.killed for m in w.malformed]
        fell_back = [w.name for w in workers if w.not_shared()]
        # IMDS's limit itself, not the emulator's tolerance (its slack absorbs only clock
        # jitter between a client's start and the emulator's arrival).
        limit = config["rate"]
        max_ms = max((w.max_ms for w in workers), default=0.0)
        slow = sum(w.slow for w in workers)
        checks = [
            (f"every token returned was issued for its key ({checked} calls checked, {bad} not)",
             bad == 0 and checked > 0),
            (f"every key fetched ({keys - unfetched} of {keys})", unfetched == 0),
            (f"answers 200 beyond one per key: {extra_200} <= {allowance} (5 x {kills + stops} "
             f"kills and stops); {stats['requests']} requests, {retried} answered by a fault "
             f"(retried), {stats['faults_injected']} faults injected",
             extra_200 <= allowance),
            (f"max arrivals in a {config['window_ms']} ms window {stats['max_window_arrivals']} "
             f"<= {limit} (the rate)",
             stats["max_window_arrivals"] <= limit),
            (f"max in flight {stats['max_concurrency']} <= {config['concurrency']}",
             stats["max_concurrency"] <= config["concurrency"]),
            (f"no 429 ({stats['sent_429']} sent, {stats['throttled']} by the throttle)",
             stats["sent_429"] == 0),
            (f"no failed call in workers never stopped ({n_errs_clean})", n_errs_clean == 0),
            (f"stopped workers failed only on their deadline ({n_errs_stopped} failed, "
             f"{len(errs_stopped_bad)} otherwise)", not errs_stopped_bad),
            (f"every call within its deadline ({over} over in workers never stopped, "
             f"{over_stopped} beyond deadline + stop in stopped ones; slowest {max_ms:.0f} ms, "
             f"{slow} calls over 1 s)", over == 0 and over_stopped == 0),
            (f"every worker not killed stopped by itself with DONE (stragglers {stragglers or 0}, "
             f"no DONE {no_done or 0}, exit {bad_exit or 'ok'})",
             not stragglers and not no_done and not bad_exit),
            (f"whole output lines ({len(malformed)} malformed)", not malformed),
            (f"every worker shared the host's table ({len(fell_back)} fell back)", not fell_back),
        ]  # fmt: skip
        good = True
        for what, held in checks:
            print(f"  [{'ok' if held else 'FAILED'}] {what}")
            good &= held
        for e in examples:
            print(f"    {e}")
        for e in (errs_clean + errs_stopped_bad)[:8]:
            print(f"    {e[:400]}")
        for name, m in malformed[:5]:
            print(f"    {name}: malformed {m!r}")
        for name in fell_back[:5]:
            print(f"    {name} fell back: {next(w for w in workers if w.name == name).stderr_text()[-300:]!r}")
        if extra_200:
            extra = sorted(((n, k) for k, n in per_key_200.items() if n > 1), reverse=True)[:5]
            for n, k in extra:
                print(f"    {n} answers 200 ({per_key_req[k]} requests) for {k[0]} {k[1]}")
        print(
            f"host torture: processes {args.processes}, seconds {S:.0f}, seed {seed}, calls "
            f"{calls}, kills {kills}, stops {stops}, requests {stats['requests']}, keys {keys}, "
            f"max arrivals/s {stats['max_window_arrivals']}, max in flight "
            f"{stats['max_concurrency']}, 429s {stats['sent_429']}, wall {wall:.1f} s: "
            f"{'PASS' if good else 'FAIL'}"
        )
        return 0 if good else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the host phase of make demo")
    d.add_argument("--kinds", default="rust,python,c,rust,python,c,rust,python",
                   help="one worker process per entry (rust, python, c)")
    d.add_argument("--modes", default="process,host,peer", help="rows to run (host is required)")
    d.add_argument("--threads", type=int, default=4)
    d.add_argument("--identities", type=int, default=20)
    d.add_argument("--deadline-s", type=float, default=60.0)
    d.add_argument("--bound-s", type=float, default=90.0, help="a run's limit (then: killed)")
    d.add_argument("--peer-bound-s", type=float, default=150.0, help="the azure-identity run's limit")
    t = sub.add_parser("torture", help="kills, stops and faults under host sharing")
    t.add_argument("--processes", type=int, default=6)
    t.add_argument("--seconds", type=float, default=30.0)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--threads", type=int, default=3)
    t.add_argument("--deadline-s", type=float, default=20.0)
    t.add_argument("--pause-ms", type=float, default=2.0, help="between a worker thread's calls")
    t.add_argument("--kills", type=int, default=None, help="default: one per 6 s, at least 2")
    t.add_argument("--stops", type=int, default=None, help="default: one per 6 s, at least 2")
    t.add_argument("--no-faults", action="store_true", help="no injected faults")
    args = p.parse_args()
    if args.command == "torture" and args.seconds < 5:
        p.error("--seconds must be at least 5")
    # A SIGTERM (make interrupted, a CI timeout) unwinds through the finally blocks above.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return demo(args) if args.command == "demo" else torture(args)


if __name__ == "__main__":
    sys.exit(main())
