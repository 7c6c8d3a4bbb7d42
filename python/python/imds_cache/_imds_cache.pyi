# Hand-written stub of the native module (checked by `python -m mypy.stubtest imds_cache`).
from typing import Any, Callable, Dict, List, Optional, Tuple, final

__all__ = ["Binding", "TokenCache", "__version__", "_close_gate"]
__version__: str

def _close_gate() -> None: ...

@final
class TokenCache:
    def __new__(
        cls,
        *,
        capacity: int = 4096,
        max_token_bytes: int = 16384,
        rate: int = 20,
        rate_window: float = 1.0,
        in_flight: int = 5,
        deadline: float = 90.0,
        connect_timeout: float = 1.0,
        attempt_timeout: float = 10.0,
        backoff: float = 1.0,
        gone_interval: float = 10.0,
        negative_ttl: float = 30.0,
        refresh_margin: float = 300.0,
        min_lifetime: float = 60.0,
        eager_retry: float = 30.0,
        refresher: bool = True,
        verify_client_id: bool = True,
        arc_key_dir: Optional[str] = None,
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
        timeout: float = 90.0,
        flavour: Optional[str] = None,
        endpoint: Optional[str] = None,
        secret: Optional[str] = None,
    ) -> Tuple[int, int, List[Tuple[int, BaseException]]]: ...
    def atfork_child(self) -> None: ...
    def flavours(self) -> List[str]: ...

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
    def refresh_on(self, scope: str) -> Optional[int]: ...
    def invalidate(self, scope: str) -> bool: ...
    @property
    def flavour(self) -> Optional[str]: ...
