"""The errors of imds_cache: both are azure-core ``ClientAuthenticationError`` subclasses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from azure.core.exceptions import ClientAuthenticationError

if TYPE_CHECKING:
    _UnavailableBase = ClientAuthenticationError
else:
    try:
        # When azure-identity is installed, ChainedTokenCredential moves on past our
        # "unavailable" only if it is azure-identity's own class (or a subclass of it).
        from azure.identity import CredentialUnavailableError as _UnavailableBase
    except ImportError:  # pragma: no cover - azure-identity is optional
        _UnavailableBase = ClientAuthenticationError

__all__ = ["CredentialUnavailableError", "ManagedIdentityError"]


class _Details:
    code: str
    endpoint_code: Optional[str]
    description: str

    def _set_details(
        self, code: str, endpoint_code: Optional[str], description: str, status: Optional[int]
    ) -> None:
        self.code = code
        self.endpoint_code = endpoint_code
        self.description = description
        # HttpResponseError's attribute; None when no response was received.
        self.status_code = status  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, endpoint_code={self.endpoint_code!r}, "
            f"description={self.description!r})"
        )


class CredentialUnavailableError(_Details, _UnavailableBase):
    """No managed identity can be had here: no endpoint answers (refused, no route, a proxy
    or something other than an identity endpoint at the address), the identity is not
    assigned to this resource, or AKS workload identity is configured.

    ``code`` is one of ``imds_cache._imds_cache.ERROR_CODES`` (``unavailable``,
    ``unavailable_timeout``, ``bad_request``…); ``endpoint_code`` is the endpoint's own error
    code when it sent one (``invalid_request``); ``description`` says more. None of them
    ever holds a token.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "unavailable",
        endpoint_code: Optional[str] = None,
        description: str = "",
        status: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message=message, **kwargs)
        self._set_details(code, endpoint_code, description or message, status)


class ManagedIdentityError(_Details, ClientAuthenticationError):
    """The endpoint refused (a terminal answer), the deadline passed while it kept failing,
    or the cache could not take the token.

    ``code`` is one of ``imds_cache._imds_cache.ERROR_CODES`` (``deadline``,
    ``server_error``, ``client_id_mismatch``…); ``endpoint_code`` is the endpoint's own error
    code when it sent one; ``status_code`` is the HTTP status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        endpoint_code: Optional[str] = None,
        description: str = "",
        status: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message=message, **kwargs)
        self._set_details(code, endpoint_code, description or message, status)
