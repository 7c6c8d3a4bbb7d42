"""Cached get_token: imds_cache against azure-identity, in one process, against the same
endpoint (AZURE_POD_IDENTITY_AUTHORITY_HOST pointing at the emulator). Prints ns per call."""

from __future__ import annotations

import timeit

import azure.identity
import imds_cache

SCOPE = "https://vault.azure.net/.default"


def per_call(fn: object, n: int = 200_000) -> float:
    best = min(timeit.repeat(fn, number=n, repeat=5))  # type: ignore[arg-type]
    return best / n * 1e9


def main() -> None:
    ours = imds_cache.ManagedIdentityCredential()
    theirs = azure.identity.ManagedIdentityCredential()
    ours.get_token(SCOPE)
    theirs.get_token(SCOPE)
    ours_info, theirs_info = ours.get_token_info(SCOPE), theirs.get_token_info(SCOPE)
    assert ours_info.token and theirs_info.token
    a = per_call(lambda: ours.get_token(SCOPE))
    b = per_call(lambda: theirs.get_token(SCOPE))
    c = per_call(lambda: ours.get_token_info(SCOPE))
    d = per_call(lambda: theirs.get_token_info(SCOPE))
    print(f"imds-cache {imds_cache.__version__} vs azure-identity {azure.identity.__version__}")
    print(f"  get_token       imds_cache {a:8.0f} ns   azure-identity {b:8.0f} ns   ({b / a:.0f}x)")
    print(f"  get_token_info  imds_cache {c:8.0f} ns   azure-identity {d:8.0f} ns   ({d / c:.0f}x)")


if __name__ == "__main__":
    main()
