"""Checked by `mypy --strict` (not run by pytest): our credentials are what azure-core's
protocols ask for, and the public API is typed."""

from __future__ import annotations

import asyncio
from typing import Dict, List, Optional, Tuple

from azure.core.credentials import AccessToken, AccessTokenInfo, SupportsTokenInfo, TokenCredential
from azure.core.credentials_async import AsyncSupportsTokenInfo, AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError

import imds_cache
import imds_cache.aio


def sync_use() -> None:
    cache = imds_cache.TokenCache(capacity=64, max_token_bytes=8192, rate=20, in_flight=5)
    credential = imds_cache.ManagedIdentityCredential(
        identity_config={"client_id": "00000000-0000-0000-0000-000000000000"}, cache=cache
    )
    as_token: TokenCredential = credential
    as_info: SupportsTokenInfo = credential
    token: AccessToken = as_token.get_token("https://vault.azure.net/.default")
    ours: imds_cache.AccessToken = credential.get_token("https://vault.azure.net/.default", claims=None)
    info: AccessTokenInfo = as_info.get_token_info("https://vault.azure.net/.default")
    refresh_on: Optional[int] = info.refresh_on
    expires_on: int = token.expires_on + ours.expires_on
    stats: Dict[str, int] = cache.stats()
    report: Tuple[int, int, List[Tuple[int, BaseException]]] = cache.prefetch([None], ["https://vault.azure.net"])
    flavour: Optional[str] = credential.flavour
    version: str = imds_cache.__version__
    with imds_cache.ManagedIdentityCredential() as c:
        c.close()
    try:
        pass
    except imds_cache.CredentialUnavailableError as e:
        code: str = e.code
        description: str = e.description
        base: ClientAuthenticationError = e
    except imds_cache.ManagedIdentityError as e:
        status: Optional[int] = e.status_code
    print(refresh_on, expires_on, stats, report, flavour, version)


async def async_use() -> None:
    credential = imds_cache.aio.ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000000")
    as_token: AsyncTokenCredential = credential
    as_info: AsyncSupportsTokenInfo = credential
    token: AccessToken = await as_token.get_token("https://storage.azure.com/.default")
    info: AccessTokenInfo = await as_info.get_token_info("https://storage.azure.com/.default")
    async with imds_cache.aio.ManagedIdentityCredential() as c:
        await c.close()
    print(token.expires_on, info.expires_on)


if __name__ == "__main__":
    sync_use()
    asyncio.run(async_use())
