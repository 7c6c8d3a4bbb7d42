"""The blocking credential."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Dict, Optional, Tuple, Type

from azure.core.credentials import TokenRequestOptions

from ._common import (
    _LOG,
    AccessToken,
    AccessTokenInfo,
    CredentialBase,
    options_claims,
)

__all__ = ["ManagedIdentityCredential"]

_COUNTERS = ("fetches", "coalesced", "failures_retry", "throttled", "refreshes")


def _moved(before: Dict[str, int], after: Dict[str, int]) -> str:
    return ", ".join(
        f"{k} +{after[k] - before[k]}" for k in _COUNTERS if after[k] != before[k]
    )


class ManagedIdentityCredential(CredentialBase):
    """A managed identity credential for the Azure SDK for Python, backed by one cache per
    process (``TokenCache``): one request per (identity, resource) however many threads
    and credentials ask, refreshed in the background before expiry, within IMDS's limits.

    Same constructor as azure-identity's: ``client_id=`` or ``identity_config=`` with one
    of ``client_id``, ``object_id``, ``resource_id``; none selects the system-assigned
    identity. The endpoint is detected from the environment as azure-identity does
    (``IDENTITY_ENDPOINT``, ``MSI_ENDPOINT``, …, else IMDS at
    ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` or 169.254.169.254), or given with
    ``endpoint=`` (and ``flavour=``, ``secret=``). ``cache=`` picks a ``TokenCache``
    other than the process-wide one. Other keyword arguments (``transport``, …) are
    accepted and ignored: the driver talks to the endpoint itself, never via a proxy.

    ``get_token`` returns the same ``AccessToken`` object until the token's refresh time,
    reading no environment variable; a miss blocks with the GIL released.
    """

    def get_token(
        self,
        *scopes: str,
        claims: Optional[str] = None,
        tenant_id: Optional[str] = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A token for the one scope (``https://vault.azure.net/.default`` or a resource
        URI). ``claims`` drops the cached token once and fetches a new one; ``tenant_id``
        and ``enable_cae`` do not apply to managed identities and are ignored."""
        if claims is None:
            memo = self._tokens.get(scopes)
            if memo is not None and memo[0] > self._now_s():
                return memo[1]
        return self._fetch(scopes, claims is not None)[0]

    def get_token_info(
        self, *scopes: str, options: Optional[TokenRequestOptions] = None
    ) -> AccessTokenInfo:
        """``get_token`` for azure-core's ``SupportsTokenInfo``: the token with
        ``refresh_on``; ``options["claims"]`` drops the cached token once."""
        claims = options_claims(options)
        if claims is None:
            memo = self._infos.get(scopes)
            if memo is not None and memo[0] > self._now_s():
                return memo[1]
        return self._fetch(scopes, claims is not None)[1]

    def _fetch(self, scopes: Tuple[str, ...], bypass: bool) -> Tuple[AccessToken, AccessTokenInfo]:
        scope = self._scope(scopes)
        started_s = self._now_s()
        debug = _LOG.isEnabledFor(logging.DEBUG)
        before = self._cache.stats() if debug else None
        try:
            token, expires_on_s = self._binding.get(scope, bypass)
        except Exception as error:
            self._failed(scopes, error)
            raise
        finally:
            if before is not None:
                moved = _moved(before, self._cache.stats())
                if moved:
                    _LOG.debug("cache counters while asking for %s: %s", self._who, moved)
        return self._answered(scopes, token, expires_on_s, started_s)

    def close(self) -> None:
        """Forgets this credential's token objects; the shared cache keeps the tokens."""
        self._clear()

    def __enter__(self) -> "ManagedIdentityCredential":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc_value: Optional[BaseException] = None,
        traceback: Optional[TracebackType] = None,
    ) -> None:
        self.close()
