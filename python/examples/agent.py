"""The Python agent of `make demo`: warms 1000 identities × 3 resources from the emulator
through the installed wheel, hammers the warm credentials from several threads, and
reports. The endpoint comes from the environment as on a real VM (D11): point
AZURE_POD_IDENTITY_AUTHORITY_HOST at the emulator. Flags: --rate N --window MS
--in-flight N (the client's budget), --seconds S, --threads T. Exit status 0 only when
every check of the report holds."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.request
from typing import Any, List, Tuple

import imds_cache

RESOURCES = ["https://management.azure.com", "https://vault.azure.net", "https://storage.azure.com"]


def control(authority: str, path: str) -> Any:
    with urllib.request.urlopen(authority.rstrip("/") + path, timeout=10) as r:
        return json.load(r)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--window", type=int, default=1000, help="milliseconds")
    parser.add_argument("--in-flight", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    authority = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    if not authority:
        print("python agent: set AZURE_POD_IDENTITY_AUTHORITY_HOST to the emulator's URL")
        return 2
    cache = imds_cache.TokenCache(
        rate=args.rate, rate_window_s=args.window / 1000, in_flight=args.in_flight
    )
    client_ids = [
        i["client_id"]
        for i in control(authority, "/control/identities")["identities"]
        if i["kind"] == "user_assigned"
    ]
    keys = len(client_ids) * len(RESOURCES)
    per_second = args.rate * 1000 / args.window
    print(
        f"python agent (imds-cache {imds_cache.__version__}): {len(client_ids)} identities × "
        f"{len(RESOURCES)} resources = {keys} keys; budget {args.rate} requests per "
        f"{args.window} ms (≈ {per_second:.0f}/s), {args.in_flight} in flight"
    )

    # Cold start: the cache's prefetch, within the budget, the GIL released.
    started = time.perf_counter()
    ok, total, errors = cache.prefetch(
        [{"client_id": c} for c in client_ids],
        RESOURCES,
        timeout_s=30 + 2 * keys / per_second,
    )
    cold = time.perf_counter() - started
    if errors:
        print(f"  first prefetch error (key {errors[0][0]}): {errors[0][1]}")
    requests = control(authority, "/control/stats")["requests"]

    # Hot phase: one credential per identity, as an application holds them; random keys.
    credentials = [
        imds_cache.ManagedIdentityCredential(client_id=c, cache=cache) for c in client_ids
    ]
    before = cache.stats()
    end = time.perf_counter() + args.seconds
    results: List[Tuple[List[int], int]] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        picks = [(rng.randrange(len(credentials)), rng.randrange(3)) for _ in range(4096)]
        lat: List[int] = []
        failed = 0
        clock = time.perf_counter_ns
        while time.perf_counter() < end:
            for i, r in picks:
                credential, scope = credentials[i], RESOURCES[r]
                t0 = clock()
                try:
                    credential.get_token(scope)
                except Exception:  # noqa: BLE001 - counted and reported
                    failed += 1
                lat.append(clock() - t0)
        results.append((lat, failed))

    hot_started = time.perf_counter()
    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hot = time.perf_counter() - hot_started
    after = cache.stats()
    latencies = sorted(x for lat, _ in results for x in lat)
    failures = sum(f for _, f in results)
    calls = len(latencies)
    misses = after["misses"] - before["misses"]
    hit_rate = (calls - misses) / max(calls, 1)
    seen = control(authority, "/control/stats")

    def pct(p: float) -> int:
        return latencies[int((len(latencies) - 1) * p)] if latencies else 0

    limit = control(authority, "/control/config")["rate"]
    budget_held = (
        seen["max_concurrency"] <= args.in_flight and seen["max_window_arrivals"] <= limit
    )
    print(f"  cold start     {requests} requests seen by the emulator for {keys} keys in {cold:.2f} s")
    print(
        f"  hot phase      {calls} calls in {hot:.1f} s on {args.threads} threads "
        f"({calls / hot / 1e6:.2f} M calls/s); p50 {pct(0.5)} ns, p99 {pct(0.99)} ns; "
        f"hit rate {hit_rate:.4f}"
    )
    print(
        f"  throttling     {seen['sent_429']} responses 429; {after['throttled']} lookups held "
        f"back by the client's budget; the emulator saw at most {seen['max_window_arrivals']} "
        f"starts in a window and {seen['max_concurrency']} in flight"
    )
    checks = [
        ("cold start: every key fetched", ok == keys == total),
        ("cold start: the emulator saw exactly one request per key", requests == keys),
        ("hot phase: no call failed", failures == 0),
        ("hot phase: every call a hit", hit_rate == 1.0 and seen["requests"] == requests),
        ("throttling events: none (no 429 from the emulator)", seen["sent_429"] == 0),
        ("budget in force: starts and requests in flight within the limits", budget_held),
    ]
    good = True
    for what, held in checks:
        print(f"  [{'ok' if held else 'FAILED'}] {what}")
        good &= held
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
