"""The asyncio credential: ``imds_cache.aio.ManagedIdentityCredential``.

A hit answers without leaving the event loop. A miss registers a waiter with the driver,
whose small worker pool (never a thread per call) resolves it through
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Optional, Tuple, Type

from azure.core.credentials import TokenRequestOptions

from ._common import AccessToken, AccessTokenInfo, CredentialBase, options_claims

__all__ = ["ManagedIdentityCredential"]


def _settle(
    future: "asyncio.Future[Tuple[str, int]]",
    value: Optional[Tuple[str, int]],
    error: Optional[BaseException],
) -> None:
    if future.done():  # the waiting task was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert value is not None
        future.set_result(value)


class ManagedIdentityCredential(CredentialBase):
    """The asyncio twin of ``imds_cache.ManagedIdentityCredential`` (azure-core's
    ``AsyncTokenCredential`` and ``AsyncSupportsTokenInfo``; ``async with``). Same
    constructor, same process-wide cache."""

    async def get_token(
        self,
        *scopes: str,
        claims: Optional[str] = None,
        tenant_id: Optional[str] = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A token for the one scope; see the sync credential."""
        if claims is None:
            memo = self._tokens.get(scopes)
            if memo is not None and memo[0] > self._now_s():
                return memo[1]
        return (await self._fetch(scopes, claims is not None))[0]

    async def get_token_info(
        self, *scopes: str, options: Optional[TokenRequestOptions] = None
    ) -> AccessTokenInfo:
        """A token with ``refresh_on``; ``options["claims"]`` drops the cached one once."""
        claims = options_claims(options)
        if claims is None:
            memo = self._infos.get(scopes)
            if memo is not None and memo[0] > self._now_s():
                return memo[1]
        return (await self._fetch(scopes, claims is not None))[1]

    async def _fetch(
        self, scopes: Tuple[str, ...], bypass: bool
    ) -> Tuple[AccessToken, AccessTokenInfo]:
        scope = self._scope(scopes)
        started_s = self._now_s()
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[Tuple[str, int]]" = loop.create_future()
        try:
            hit = self._binding.get_or_notify(
                scope,
                bypass,
                loop.call_soon_threadsafe,
                lambda value, error: _settle(future, value, error),
            )
            token, expires_on_s = hit if hit is not None else await future
        except Exception as error:
            self._failed(scopes, error)
            raise
        return self._answered(scopes, token, expires_on_s, started_s)

    async def close(self) -> None:
        """Forgets this credential's token objects; the shared cache keeps the tokens."""
        self._clear()

    async def __aenter__(self) -> "ManagedIdentityCredential":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc_value: Optional[BaseException] = None,
        traceback: Optional[TracebackType] = None,
    ) -> None:
        await self.close()
