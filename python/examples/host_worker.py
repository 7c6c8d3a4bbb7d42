"""A worker of the host-sharing tests (tests/host/run.py): threads of one process ask the
emulator's identities for tokens through imds_cache.ManagedIdentityCredential over one
TokenCache, whose table and request budget are the process's own (--share process) or the
host's (--share host); or, with --peer azure-identity, through azure-identity's
ManagedIdentityCredential (for comparison: --share and --dir are then ignored).

The same CLI and output as client/examples/host_worker.rs and ffi/examples/host_worker.c:

    host_worker.py --share host|process --dir PATH --client-ids A,B,C --resources R1,R2
                   [--threads N (4)] [--mode warm|loop (warm)] [--seconds S (10)]
                   [--deadline-s D (90)] [--pause-ms P (warm 0, loop 2)] [--seed X (pid)]
                   [--start-at UNIX_MS] [--endpoint env|explicit (env)]
                   [--peer imds-cache|azure-identity]

The endpoint is AZURE_POD_IDENTITY_AUTHORITY_HOST, which must be a loopback URL
(http://127.0.0.1:PORT, the emulator): the worker refuses to start otherwise (and when a
variable of another endpoint kind, IDENTITY_ENDPOINT, MSI_ENDPOINT, ..., is set), so it never
asks the real IMDS address. --endpoint env (the default) lets the credential detect it from the
environment, as an application on a VM does; --endpoint explicit passes that URL as
ManagedIdentityCredential(endpoint=, flavour="imds") (azure-identity always reads the
environment). --dir is the share directory (TokenCache(share_dir=); a 0700 directory
of this user). --deadline-s is each call's deadline (TokenCache(deadline_s=); azure-identity
has no such setting). --start-at waits until that wall-clock time (Unix milliseconds) before
the threads start, so that several processes start at once. warm: every thread asks every
(client id, resource) pair once, in its own seeded order, the threads released together.
loop: every thread asks random pairs for --seconds, sleeping --pause-ms between calls. One
credential per client id, shared by the threads, as an application holds them; the scope is
the resource + "/.default".

Output on stdout, one line per call, written whole and flushed (a killed worker's lines so far
are whole):

    CALL <client_id> <resource> <fnv1a64 of the token's bytes, 16 hex digits> <elapsed_ms>
    ERR <client_id> <resource> <elapsed_ms> <error text, one line, never a token or a secret>
    DONE <calls> <errors>

elapsed_ms is a decimal number of milliseconds with three fraction digits. A token is never
printed. Exit status 0 when every call succeeded, 1 when some failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from typing import Any, Callable, Dict, List

_MASK = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _MASK
    return h


_out_lock = threading.Lock()
# Variables that would make a credential detect an endpoint other than IMDS.
OTHER_ENDPOINTS = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "AZURE_FEDERATED_TOKEN_FILE",
)


def emit(line: str) -> None:
    with _out_lock:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            os._exit(3)


def one_line(error: BaseException) -> str:
    """The error's type and text on one line (our errors and azure-identity's never carry the
    token; nothing else is printed)."""
    text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:600]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--share", choices=["host", "process"], default="process")
    p.add_argument("--dir", default=None)
    p.add_argument("--client-ids", required=True)
    p.add_argument("--resources", required=True)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--mode", choices=["warm", "loop"], default="warm")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--deadline-s", type=float, default=90.0)
    p.add_argument("--pause-ms", type=float, default=None)
    p.add_argument("--seed", type=int, default=os.getpid())
    p.add_argument("--start-at", type=float, default=None, help="Unix milliseconds")
    p.add_argument("--endpoint", choices=["env", "explicit"], default="env")
    p.add_argument("--peer", choices=["imds-cache", "azure-identity"], default="imds-cache")
    args = p.parse_args()
    url = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "")
    if not (url.startswith("http://127.0.0.1:") or url.startswith("http://localhost:")):
        print(
            "host_worker: AZURE_POD_IDENTITY_AUTHORITY_HOST must be the emulator's "
            "http://127.0.0.1:PORT",
            file=sys.stderr,
        )
        return 2
    other = [v for v in OTHER_ENDPOINTS if v in os.environ]
    if other:
        print(f"host_worker: {other[0]} is set: only the emulator", file=sys.stderr)
        return 2
    client_ids = [c for c in args.client_ids.split(",") if c]
    resources = [r for r in args.resources.split(",") if r]
    if not client_ids or not resources:
        print("host_worker: --client-ids and --resources are required", file=sys.stderr)
        return 2
    if args.peer == "imds-cache" and args.share == "host" and not args.dir:
        print("host_worker: --share host needs --dir", file=sys.stderr)
        return 2
    threads = max(1, args.threads)
    warm = args.mode == "warm"
    pause_s = (args.pause_ms if args.pause_ms is not None else (0 if warm else 2)) / 1000

    credentials: Dict[str, Any] = {}
    if args.peer == "azure-identity":
        from azure.identity import ManagedIdentityCredential as Peer

        for c in client_ids:
            credentials[c] = Peer(client_id=c)
    else:
        import imds_cache

        cache = imds_cache.TokenCache(
            share=args.share, share_dir=args.dir, deadline_s=args.deadline_s
        )
        where: Dict[str, str] = {"endpoint": url, "flavour": "imds"} if args.endpoint == "explicit" else {}
        for c in client_ids:
            credentials[c] = imds_cache.ManagedIdentityCredential(client_id=c, cache=cache, **where)
    keys = [(c, r) for c in client_ids for r in resources]

    if args.start_at is not None:
        # Never more than a minute: a wrong clock must not hang the worker.
        time.sleep(min(60.0, max(0.0, args.start_at / 1000 - time.time())))
    gate = threading.Barrier(threads)
    totals = [0, 0]
    totals_lock = threading.Lock()

    def run(t: int) -> None:
        rng = random.Random(args.seed * 1000 + t)
        order = list(keys)
        rng.shuffle(order)
        clock: Callable[[], float] = time.perf_counter
        calls = errors = 0
        gate.wait()
        end = clock() + args.seconds
        i = 0
        while True:
            if warm:
                if i == len(order):
                    break
                cid, resource = order[i]
                i += 1
            else:
                if clock() >= end:
                    break
                cid, resource = keys[rng.randrange(len(keys))]
            t0 = clock()
            try:
                token = credentials[cid].get_token(resource + "/.default").token
                ms = (clock() - t0) * 1000
                line = f"CALL {cid} {resource} {fnv1a64(token.encode()):016x} {ms:.3f}\n"
                del token
            except Exception as error:  # noqa: BLE001 - reported, counted
                ms = (clock() - t0) * 1000
                errors += 1
                line = f"ERR {cid} {resource} {ms:.3f} {one_line(error)}\n"
            calls += 1
            emit(line)
            if pause_s > 0:
                time.sleep(pause_s)
        with totals_lock:
            totals[0] += calls
            totals[1] += errors

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    emit(f"DONE {totals[0]} {totals[1]}\n")
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main())
