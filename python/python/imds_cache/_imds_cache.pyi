# Hand-written stub of the native module (checked by `python -m mypy.stubtest imds_cache`).
from typing import Any, Callable, Dict, List, Optional, Tuple, final

__all__ = [
    "Binding",
    "DEFAULTS",
    "FakeClock",
    "ERROR_CODES",
    "FLAVOURS",
    "STATS_FIELDS",
    "TokenCache",
    "__version__",
    "_close_gate",
    "identities_from_arm",
]
__version__: str
DEFAULTS: Dict[str, Any]
FLAVOURS: Tuple[str, ...]
STATS_FIELDS: Tuple[str, ...]
ERROR_CODES: Tuple[str, ...]

def _close_gate() -> None: ...
def identities_from_arm(json: str) -> List[Tuple[str, Optional[str]]]: ...

@final
class TokenCache:
    def __new__(
        cls,
        *,
        capacity: int,
        max_token_bytes: int,
        rate: int,
        rate_window_s: float,
        in_flight: int,
        deadline_s: float,
        connect_timeout_s: float,
        attempt_timeout_s: float,
        backoff_s: float,
        gone_interval_s: float,
        negative_ttl_s: float,
        refresh_margin_s: float,
        min_lifetime_s: float,
        eager_retry_s: float,
        refresher: bool,
        verify_client_id: bool,
        arc_key_dir: Optional[str] = None,
        share: str = "process",
        share_dir: Optional[str] = None,
        clock: Optional[FakeClock] = None,
    ) -> TokenCache: ...
    def bind(
        self,
        kind: str,
        value: Optional[str],
        *,
        flavour: Optional[str] = None,
        endpoint: Optional[str] = None,
        secret: Optional[str] = None,
        default_client_id: Optional[str] = None,
    ) -> Binding: ...
    def stats(self) -> Dict[str, int]: ...
    def prefetch(
        self,
        identities: List[Tuple[str, Optional[str]]],
        resources: List[str],
        *,
        timeout_s: float = 90.0,
        flavour: Optional[str] = None,
        endpoint: Optional[str] = None,
        secret: Optional[str] = None,
    ) -> Tuple[int, int, List[Tuple[int, BaseException]]]: ...
    def now_s(self) -> float: ...
    def atfork_child(self) -> None: ...
    def flavours(self) -> List[str]: ...

@final
class FakeClock:
    def __new__(cls) -> FakeClock: ...
    def advance(self, seconds: float) -> None: ...
    @property
    def now_s(self) -> float: ...

@final
class Binding:
    def get(self, scope: str, bypass: bool = False) -> Tuple[str, int]: ...
    def get_or_notify(
        self,
        scope: str,
        bypass: bool,
        call_soon_threadsafe: Callable[..., Any],
        done: Callable[[Optional[Tuple[str, int]], Optional[BaseException]], None],
    ) -> Optional[Tuple[str, int]]: ...
    def refresh_on_s(self, scope: str) -> Optional[int]: ...
    def invalidate(self, scope: str) -> bool: ...
    @property
    def flavour(self) -> Optional[str]: ...
