"""Our Python credential against azure-identity's, in one run.

Starts target/release/imds-emulator with throttling off (`--throttle off --identities 1000
--token-size 1900`), points both libraries at it with AZURE_POD_IDENTITY_AUTHORITY_HOST, and
measures, for `imds_cache.ManagedIdentityCredential` and
`azure.identity.ManagedIdentityCredential`:

* cached `get_token`: calls/s on 1 thread (median of 9 runs of ≈ 0.3 s) and on 8 threads
  sharing one credential (median of 3 runs of 1 s; calls/s of all threads together); both
  libraries in one process with their runs interleaved, the ratio being the median of the
  ratios of neighbouring runs (the machine's load drifts; this keeps it out of the ratio);
* a cold start from 8 threads: each thread asks for every key of 10 identities × 3
  resources, in the same order, released at once by a barrier (one credential per identity,
  shared by the threads, as an application holds them); the requests are what the emulator
  saw (GET /control/stats `requests`, after /control/reset);
* RSS growth holding 1000 identities × 3 resources: one credential per identity, every
  token fetched once, in the main thread; VmRSS after minus VmRSS once the first token was
  fetched (imports, the cache and lazy modules already loaded).

The cold start and the RSS run in their own subprocess per library, so one library's
caches, threads and heap do not touch the other's. Our credential uses its defaults except for the RSS
part, where its cache's budget is raised to 125 requests per 250 ms and 16 in flight so the
3000 fetches take seconds rather than IMDS's 150 (the budget does not change what is held).

Prints a Markdown table with the ratios and writes it to
target/bench/python_vs_azure_identity.md (included as is by bench_table) and the numbers to
target/bench/python_vs_azure_identity.json. Run with the venv's Python
(`make py-install` installs our wheel and azure-identity into .venv):

    .venv/bin/python benches/python_vs_azure_identity.py
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
EMULATOR = TARGET / "release" / "imds-emulator"
RESOURCES = ["https://management.azure.com", "https://vault.azure.net", "https://storage.azure.com"]
LIBS = ["imds_cache", "azure-identity"]
THREADS = 8
COLD_IDENTITIES = 10
RSS_IDENTITIES = 1000
TARGET_RATIO = 30.0
# Variables through which either library could detect another endpoint.
ENDPOINT_VARS = [
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
]


# ---- the worker (one measurement, one library, in its own process) ------------------------


def control(authority: str, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(authority.rstrip("/") + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def client_ids(authority: str) -> List[str]:
    return [
        i["client_id"]
        for i in control(authority, "/control/identities")["identities"]
        if i["kind"] == "user_assigned"
    ]


def credential_factory(lib: str, cache: Any = None) -> Callable[[str], Any]:
    if lib == "imds_cache":
        import imds_cache

        if cache is None:
            return lambda c: imds_cache.ManagedIdentityCredential(client_id=c)
        return lambda c: imds_cache.ManagedIdentityCredential(client_id=c, cache=cache)
    import azure.identity

    return lambda c: azure.identity.ManagedIdentityCredential(client_id=c)


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def worker_cached(lib: str, authority: str) -> Dict[str, Any]:
    """Both libraries in this one process, runs interleaved (ours, theirs, ours, …): the
    machine is shared and its load drifts, so each ratio is taken between neighbouring runs
    and the median of those ratios is reported. (`lib` is ignored: "both".)"""
    cid = client_ids(authority)[0]
    scope = RESOURCES[1] + "/.default"
    gets = {}
    for name in LIBS:
        cred = credential_factory(name)(cid)
        assert cred.get_token(scope).token
        gets[name] = cred.get_token

    def calibrate(get: Callable[[str], Any]) -> int:
        n = 100
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                get(scope)
            dt = time.perf_counter() - t0
            if dt > 0.05:
                return max(100, int(n * 0.3 / dt))
            n *= 4

    def single(get: Callable[[str], Any], n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            get(scope)
        return n / (time.perf_counter() - t0)

    def multi(get: Callable[[str], Any]) -> float:
        stop = threading.Event()
        counts = [0] * THREADS
        barrier = threading.Barrier(THREADS + 1)

        def hammer(t: int) -> None:
            barrier.wait()
            k = 0
            while not stop.is_set():
                for _ in range(100):
                    get(scope)
                k += 100
            counts[t] = k

        threads = [threading.Thread(target=hammer, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        time.sleep(1.0)
        stop.set()
        for th in threads:
            th.join()
        return sum(counts) / (time.perf_counter() - t0)

    n = {name: calibrate(gets[name]) for name in LIBS}
    s1: Dict[str, List[float]] = {name: [] for name in LIBS}
    s8: Dict[str, List[float]] = {name: [] for name in LIBS}
    for _ in range(9):
        for name in LIBS:
            s1[name].append(single(gets[name], n[name]))
    for _ in range(3):
        for name in LIBS:
            s8[name].append(multi(gets[name]))
    ours, theirs = LIBS
    return {
        name: {
            "calls_per_s_1_thread": statistics.median(s1[name]),
            "calls_per_s_8_threads": statistics.median(s8[name]),
            "runs_1_thread": s1[name],
            "runs_8_threads": s8[name],
        }
        for name in LIBS
    } | {
        "ratio_1_thread": statistics.median(a / b for a, b in zip(s1[ours], s1[theirs])),
        "ratio_8_threads": statistics.median(a / b for a, b in zip(s8[ours], s8[theirs])),
    }


def worker_cold(lib: str, authority: str) -> Dict[str, Any]:
    make = credential_factory(lib)
    creds = [make(c) for c in client_ids(authority)[:COLD_IDENTITIES]]
    scopes = [r + "/.default" for r in RESOURCES]
    barrier = threading.Barrier(THREADS)
    errors: List[str] = []

    def run() -> None:
        barrier.wait()
        for cred in creds:
            for s in scopes:
                try:
                    assert cred.get_token(s).token
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(type(e).__name__)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {
        "wall_s": time.perf_counter() - t0,
        "keys": len(creds) * len(scopes),
        "errors": len(errors),
    }


def worker_rss(lib: str, authority: str) -> Dict[str, Any]:
    cache = None
    if lib == "imds_cache":
        import imds_cache

        cache = imds_cache.TokenCache(rate=125, rate_window_s=0.25, in_flight=16)
    make = credential_factory(lib, cache)
    ids = client_ids(authority)[:RSS_IDENTITIES]
    scopes = [r + "/.default" for r in RESOURCES]
    creds = [make(ids[0])]
    token_bytes = len(creds[0].get_token(scopes[0]).token)
    gc.collect()
    baseline = vm_rss_kib()
    t0 = time.perf_counter()
    creds += [make(c) for c in ids[1:]]
    for cred in creds:
        for s in scopes:
            assert cred.get_token(s).token
    wall = time.perf_counter() - t0
    gc.collect()
    after = vm_rss_kib()
    return {
        "baseline_kib": baseline,
        "after_kib": after,
        "growth_bytes": (after - baseline) * 1024,
        "keys": len(creds) * len(scopes),
        "token_bytes": token_bytes,
        "fill_s": wall,
    }


WORKERS = {"cached": worker_cached, "cold": worker_cold, "rss": worker_rss}


# ---- the driver ---------------------------------------------------------------------------


def run_worker(kind: str, lib: str, authority: str) -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
    env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = authority
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, lib, authority],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=600,
    ).stdout
    result: Dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def start_emulator() -> "tuple[subprocess.Popen[str], str]":
    if not EMULATOR.exists():
        sys.exit(f"{EMULATOR} is missing: cargo build --release -p imds-emulator")
    proc = subprocess.Popen(
        [
            str(EMULATOR),
            "--port",
            "0",
            "--throttle",
            "off",
            "--identities",
            str(RSS_IDENTITIES),
            "--token-size",
            "1900",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        sys.exit("the emulator did not start")
    return proc, url


def fmt_rate(v: float) -> str:
    return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s"


def main() -> int:
    import azure.identity
    import imds_cache

    started = datetime.datetime.now(datetime.timezone.utc)
    proc, url = start_emulator()
    try:
        res: Dict[str, Dict[str, Any]] = {lib: {} for lib in LIBS}
        print("both: cached get_token, runs interleaved ...", flush=True)
        cached = run_worker("cached", "both", url)
        for lib in LIBS:
            res[lib]["cached"] = cached[lib]
        for lib in LIBS:
            print(f"{lib}: cold start from {THREADS} threads ...", flush=True)
            control(url, "/control/reset", "POST")
            before = control(url, "/control/stats")["requests"]
            cold = run_worker("cold", lib, url)
            cold["requests"] = control(url, "/control/stats")["requests"] - before
            res[lib]["cold"] = cold
        for lib in LIBS:
            print(f"{lib}: RSS holding {RSS_IDENTITIES} × {len(RESOURCES)} ...", flush=True)
            res[lib]["rss"] = run_worker("rss", lib, url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    ours, theirs = res["imds_cache"], res["azure-identity"]
    r1, r8 = cached["ratio_1_thread"], cached["ratio_8_threads"]
    keys = ours["cold"]["keys"]
    rss_keys = ours["rss"]["keys"]

    def mib(b: float) -> str:
        return f"{b / 2**20:.1f} MiB ({b / rss_keys:,.0f} B per key)"

    rows = [
        (
            "cached `get_token`, 1 thread (calls/s)",
            fmt_rate(ours["cached"]["calls_per_s_1_thread"]),
            fmt_rate(theirs["cached"]["calls_per_s_1_thread"]),
            f"**{r1:.0f}×** faster (median of paired runs)",
        ),
        (
            f"cached `get_token`, {THREADS} threads, one credential (calls/s, all threads)",
            fmt_rate(ours["cached"]["calls_per_s_8_threads"]),
            fmt_rate(theirs["cached"]["calls_per_s_8_threads"]),
            f"**{r8:.0f}×** faster (median of paired runs)",
        ),
        (
            f"cold start, {THREADS} threads × {keys} keys ({COLD_IDENTITIES} identities × "
            f"{len(RESOURCES)}): requests the emulator saw",
            f"{ours['cold']['requests']} ({ours['cold']['requests'] / keys:.2f} per key)",
            f"{theirs['cold']['requests']} ({theirs['cold']['requests'] / keys:.2f} per key)",
            f"{theirs['cold']['requests'] / max(ours['cold']['requests'], 1):.1f}× fewer",
        ),
        (
            "cold start wall time (ours at its default budget, 20/s and 5 in flight)",
            f"{ours['cold']['wall_s']:.2f} s",
            f"{theirs['cold']['wall_s']:.2f} s",
            f"{theirs['cold']['wall_s'] / ours['cold']['wall_s']:.2f}×",
        ),
        (
            f"RSS growth holding {RSS_IDENTITIES} identities × {len(RESOURCES)} resources "
            f"({ours['rss']['token_bytes']}-byte tokens)",
            mib(ours["rss"]["growth_bytes"]),
            mib(theirs["rss"]["growth_bytes"]),
            f"{theirs['rss']['growth_bytes'] / max(ours['rss']['growth_bytes'], 1):.2f}× less",
        ),
    ]
    met = r1 >= TARGET_RATIO
    lines = [
        f"imds-cache {imds_cache.__version__} vs azure-identity {azure.identity.__version__} "
        f"(Python {sys.version.split()[0]}), emulator with throttling off, "
        f"{started:%Y-%m-%d %H:%M} UTC.",
        "",
        "| | imds_cache | azure-identity | ours vs theirs |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        f"Target: cached `get_token` ≥ {TARGET_RATIO:.0f}× azure-identity's calls/s: "
        f"{r1:.0f}× on 1 thread, {r8:.0f}× on {THREADS} threads: "
        f"**{'met' if met and r8 >= TARGET_RATIO else 'MISSED'}**.",
    ]
    errors = ours["cold"]["errors"] + theirs["cold"]["errors"]
    if errors:
        lines.append(f"\n{errors} cold-start calls failed (see the JSON).")
    table = "\n".join(lines) + "\n"
    print()
    print(table, end="")
    out = TARGET / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "python_vs_azure_identity.md").write_text(table)
    summary = {
        "ratio_cached_1_thread": r1,
        f"ratio_cached_{THREADS}_threads": r8,
        "target_ratio": TARGET_RATIO,
        "met": met and r8 >= TARGET_RATIO,
        "results": res,
    }
    (out / "python_vs_azure_identity.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / 'python_vs_azure_identity.md'}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        print(json.dumps(WORKERS[sys.argv[2]](sys.argv[3], sys.argv[4])))
        sys.exit(0)
    sys.exit(main())
