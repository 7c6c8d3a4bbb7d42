"""imds-cache for Python: a drop-in ``ManagedIdentityCredential`` for the Azure SDK.

One token cache per process (``TokenCache``) serves every credential: one request per
(identity, resource) however many threads, credentials or coroutines ask; tokens refreshed
in the background before they expire; requests to the endpoint kept within IMDS's limits
(20/s, 5 at once by default) and never sent through a proxy. ``imds_cache.aio`` has the
asyncio credential.

Tokens are secrets: no ``repr``, message or log record of this package shows one. The
``str`` objects handed out are the caller's; Python cannot wipe them (DESIGN D13).
"""

from ._common import AccessToken, AccessTokenInfo, TokenCache, default_cache, identities_from_arm
from ._credential import ManagedIdentityCredential
from ._errors import CredentialUnavailableError, ManagedIdentityError
from ._imds_cache import __version__

__all__ = [
    "AccessToken",
    "AccessTokenInfo",
    "CredentialUnavailableError",
    "ManagedIdentityCredential",
    "ManagedIdentityError",
    "TokenCache",
    "__version__",
    "default_cache",
    "identities_from_arm",
]
