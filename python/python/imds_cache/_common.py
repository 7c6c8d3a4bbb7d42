"""What the sync and asyncio credentials share: the token types, the cache, the memo of
answered tokens, and the constructor's identity rules."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from azure.core import credentials as _core

from . import _imds_cache
from ._errors import CredentialUnavailableError

__all__ = ["AccessToken", "AccessTokenInfo", "TokenCache", "identities_from_arm"]

_LOG = logging.getLogger("imds_cache")


class AccessToken(_core.AccessToken):
    """azure-core's ``AccessToken`` whose ``repr`` hides the token."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"AccessToken(token='<redacted>', expires_on={self.expires_on})"


class AccessTokenInfo(_core.AccessTokenInfo):
    """azure-core's ``AccessTokenInfo`` whose ``repr`` hides the token."""

    def __repr__(self) -> str:
        return (
            f"AccessTokenInfo(token='<redacted>', expires_on={self.expires_on}, "
            f"token_type='{self.token_type}', refresh_on={self.refresh_on})"
        )


_CACHES: "weakref.WeakSet[TokenCache]" = weakref.WeakSet()

# The defaults live in Rust (the driver's and the core's configuration), read once here.
_DEFAULTS: Dict[str, Any] = _imds_cache.DEFAULTS


def _clock_reader(clock: _imds_cache.FakeClock) -> Callable[[], float]:
    return lambda: clock.now_s


class TokenCache:
    """A token cache that credentials share; by default every credential in the process
    shares one (so N credentials for one identity make one request).

    ``capacity`` entries of (identity, resource), tokens of up to ``max_token_bytes``;
    at most ``rate`` request starts per ``rate_window_s`` seconds and ``in_flight`` requests
    at once per endpoint (IMDS allows about 20/s and 5). ``deadline_s`` bounds a blocking
    call (90 s: longer than IMDS's 70 s update window), ``backoff_s`` is the first retry delay
    (doubling to 16 s), ``gone_interval_s`` the retry interval while IMDS answers 410,
    ``negative_ttl_s`` how long a refusal is remembered; tokens are refreshed
    ``refresh_margin_s`` seconds before expiry at the latest and never handed out with less
    than ``min_lifetime_s`` left; a failed background refresh is tried again ``eager_retry_s``
    seconds later. Times are in seconds.

    ``share="host"`` (or ``IMDS_CACHE_SHARE=host`` when ``share`` is not given) shares the
    tokens and the request budget with every process of this user on the host (Linux): the
    table lives in a file in ``share_dir`` (else ``$IMDS_CACHE_DIR``, else
    ``$XDG_RUNTIME_DIR/imds-cache``, else ``/run/user/<uid>/imds-cache``) that every process
    maps. Files that cannot be trusted make the cache keep its own, with one WARNING on the
    ``imds_cache`` logger. With a shared table, credentials keep no memo of their own: each
    call reads the table (without a lock), so a token dropped in one process (``claims``)
    is gone for the next call in every process.
    """

    def __init__(
        self,
        *,
        capacity: int = _DEFAULTS["capacity"],
        max_token_bytes: int = _DEFAULTS["max_token_bytes"],
        rate: int = _DEFAULTS["rate"],
        rate_window_s: float = _DEFAULTS["rate_window_s"],
        in_flight: int = _DEFAULTS["in_flight"],
        deadline_s: float = _DEFAULTS["deadline_s"],
        connect_timeout_s: float = _DEFAULTS["connect_timeout_s"],
        attempt_timeout_s: float = _DEFAULTS["attempt_timeout_s"],
        backoff_s: float = _DEFAULTS["backoff_s"],
        gone_interval_s: float = _DEFAULTS["gone_interval_s"],
        negative_ttl_s: float = _DEFAULTS["negative_ttl_s"],
        refresh_margin_s: float = _DEFAULTS["refresh_margin_s"],
        min_lifetime_s: float = _DEFAULTS["min_lifetime_s"],
        eager_retry_s: float = _DEFAULTS["eager_retry_s"],
        refresher: bool = _DEFAULTS["refresher"],
        verify_client_id: bool = _DEFAULTS["verify_client_id"],
        arc_key_dir: Optional[str] = None,
        share: Optional[str] = None,
        share_dir: Optional[str] = None,
        _clock: Optional[_imds_cache.FakeClock] = None,
    ) -> None:
        if share is None:
            share = "host" if os.environ.get("IMDS_CACHE_SHARE") == "host" else "process"
        # A shared table is read on every call: other processes may drop a token.
        self._shares_host = share == "host"
        # Tests pass a FakeClock (``_clock``) to run refresh and expiry on fake time; the
        # credentials' memo then reads the same clock.
        self._now_s: Callable[[], float] = time.time if _clock is None else _clock_reader(_clock)
        self._native = _imds_cache.TokenCache(
            capacity=capacity,
            max_token_bytes=max_token_bytes,
            rate=rate,
            rate_window_s=rate_window_s,
            in_flight=in_flight,
            deadline_s=deadline_s,
            connect_timeout_s=connect_timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            backoff_s=backoff_s,
            gone_interval_s=gone_interval_s,
            negative_ttl_s=negative_ttl_s,
            refresh_margin_s=refresh_margin_s,
            min_lifetime_s=min_lifetime_s,
            eager_retry_s=eager_retry_s,
            refresher=refresher,
            verify_client_id=verify_client_id,
            arc_key_dir=arc_key_dir,
            share=share,
            share_dir=share_dir,
            clock=_clock,
        )
        _CACHES.add(self)

    def stats(self) -> Dict[str, int]:
        """The core's counters (named in ``imds_cache._imds_cache.STATS_FIELDS``: hits,
        misses, fetches, …), summed over this cache's endpoints."""
        return self._native.stats()

    def prefetch(
        self,
        identities: Iterable[Optional[Mapping[str, str]]],
        scopes: Iterable[str],
        *,
        timeout_s: float = 90.0,
        **endpoint: Any,
    ) -> Tuple[int, int, List[Tuple[int, BaseException]]]:
        """Fetches every (identity, scope) pair within the request budget, the GIL
        released. An identity is ``None`` (system-assigned) or an ``identity_config``
        mapping. Returns ``(ok, total, [(index, error), …])`` with index
        ``identity_index * len(scopes) + scope_index``; ``timeout_s`` bounds the whole call."""
        pairs = [_selector(None, i) for i in identities]
        return self._native.prefetch(pairs, list(scopes), timeout_s=timeout_s, **endpoint)


def identities_from_arm(identity: str) -> List[Optional[Dict[str, str]]]:
    """The identities an ARM resource's ``identity`` property grants (the JSON text of it, in
    the current ``userAssignedIdentities`` form or the old ``identityIds`` one), as
    ``TokenCache.prefetch`` takes them: ``None`` for the system-assigned identity, then
    ``{"resource_id": …}`` for each user-assigned one. ``ValueError`` says what is wrong
    with a malformed property."""
    identities: List[Optional[Dict[str, str]]] = []
    for kind, value in _imds_cache.identities_from_arm(identity):
        if kind == "system":
            identities.append(None)
        elif value is not None:
            identities.append({kind: value})
    return identities


_default_lock = threading.Lock()
_default: Optional[TokenCache] = None


def default_cache() -> TokenCache:
    """The process-wide cache every credential uses unless given ``cache=``."""
    global _default
    cache = _default
    if cache is None:
        with _default_lock:
            if _default is None:
                _default = TokenCache()
            cache = _default
    return cache


def _after_fork_in_child() -> None:
    # DESIGN D12. The driver's pthread_atfork handler has already reset its clients; this
    # covers forks that bypass it and is harmless after it.
    for cache in list(_CACHES):
        cache._native.atfork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# identity_config keys and the selector each names: azure-identity's own spellings, and the
# query parameter names it also accepts for an ARM resource id.
_CONFIG_KEYS = {
    "client_id": "client_id",
    "object_id": "object_id",
    "resource_id": "resource_id",
    "mi_res_id": "resource_id",
    "msi_res_id": "resource_id",
}


def _selector(
    client_id: Optional[str], identity_config: Optional[Mapping[str, str]]
) -> Tuple[str, Optional[str]]:
    """azure-identity's constructor rules: ``client_id`` or one ``identity_config`` entry
    (``client_id``, ``object_id``, ``resource_id``, or ``mi_res_id`` / ``msi_res_id`` for a
    resource id), at most one; none is system-assigned."""
    given: List[Tuple[str, str]] = []
    if client_id is not None:
        given.append(("client_id", client_id))
    for key, value in (identity_config or {}).items():
        kind = _CONFIG_KEYS.get(key)
        if kind is None:
            raise ValueError(
                f"identity_config key {key!r} is not one of {', '.join(_CONFIG_KEYS)}"
            )
        if value is not None:
            given.append((kind, value))
    if len(given) > 1:
        raise ValueError(
            "ManagedIdentityCredential takes at most one identity: client_id or one "
            f"identity_config entry, got {', '.join(k for k, _ in given)}"
        )
    return given[0] if given else ("system", None)


def describe(kind: str, value: Optional[str]) -> str:
    """An identity for log records (selectors are not secrets)."""
    return "system-assigned" if value is None else f"{kind}={value}"


class CredentialBase:
    """Constructor, memo and bookkeeping shared by the sync and asyncio credentials."""

    _binding: _imds_cache.Binding

    def __init__(
        self,
        *,
        client_id: Optional[str] = None,
        identity_config: Optional[Mapping[str, str]] = None,
        cache: Optional[TokenCache] = None,
        flavour: Optional[str] = None,
        endpoint: Optional[str] = None,
        secret: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        kind, value = _selector(client_id, identity_config)
        self._cache = cache if cache is not None else default_cache()
        self._binding = self._cache._native.bind(
            kind, value, flavour=flavour, endpoint=endpoint, secret=secret
        )
        self._who = describe(kind, value)
        self._now_s = self._cache._now_s
        # scopes → (refresh time, token object); a hit returns the same object.
        self._tokens: Dict[Tuple[str, ...], Tuple[float, AccessToken]] = {}
        self._infos: Dict[Tuple[str, ...], Tuple[float, AccessTokenInfo]] = {}
        if kwargs:
            _LOG.debug("ManagedIdentityCredential ignores %s", sorted(kwargs))

    @property
    def cache(self) -> TokenCache:
        """The cache this credential uses."""
        return self._cache

    @property
    def flavour(self) -> Optional[str]:
        """The kind of endpoint tokens come from (``imds``, ``app_service_2019``, …), or
        ``None`` when none can serve here."""
        flavour: Optional[str] = self._binding.flavour
        return flavour

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._who}, flavour={self.flavour!r})"

    @staticmethod
    def _scope(scopes: Tuple[str, ...]) -> str:
        if len(scopes) != 1:
            raise ValueError("ManagedIdentityCredential.get_token requires exactly one scope")
        return scopes[0]

    def _answered(
        self, scopes: Tuple[str, ...], token: str, expires_on_s: int, started_s: float
    ) -> Tuple[AccessToken, AccessTokenInfo]:
        now_s = self._now_s()
        # The cache's own refresh time (the rule and its per-key jitter live in the core);
        # `None` when the token is no longer held there: then nothing is memoised and the
        # next call asks the cache again. A table shared with other processes is asked on
        # every call: one of them may have dropped the token.
        refresh_on_s = self._binding.refresh_on_s(scopes[0])
        memo = refresh_on_s is not None and not self._cache._shares_host
        old = self._tokens.get(scopes)
        at = AccessToken(token, expires_on_s)
        info = AccessTokenInfo(token, expires_on_s, refresh_on=refresh_on_s)
        if memo and refresh_on_s is not None:
            self._tokens[scopes] = (refresh_on_s, at)
            self._infos[scopes] = (refresh_on_s, info)
        if _LOG.isEnabledFor(logging.DEBUG):
            _LOG.debug(
                "%s token for %s, %s: expires_on=%d, refresh_on=%s, %.1f ms",
                "refreshed" if old is not None and old[1].token != token else "got",
                self._who,
                scopes[0],
                expires_on_s,
                refresh_on_s,
                (now_s - started_s) * 1000,
            )
        return at, info

    def _failed(self, scopes: Tuple[str, ...], error: BaseException) -> None:
        # "No managed identity here" is what a credential chain meets on every machine off
        # Azure: INFO, as azure-identity logs it; a refusal is a WARNING.
        level = logging.INFO if isinstance(error, CredentialUnavailableError) else logging.WARNING
        _LOG.log(level, "no token for %s, %s: %s", self._who, scopes[0] if scopes else "", error)

    def _clear(self) -> None:
        self._tokens.clear()
        self._infos.clear()


def options_claims(options: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The claims of a ``TokenRequestOptions``."""
    if not options:
        return None
    claims: Optional[str] = options.get("claims")
    return claims
