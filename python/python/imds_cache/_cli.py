"""``imds-cache token --resource URL [--client-id ID | --object-id ID | --resource-id ID]
[--json] [--timeout SECONDS] [--verbose]``: a token from the managed identity, as
``az account get-access-token`` prints it."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from typing import List, Optional

from ._common import TokenCache
from ._credential import ManagedIdentityCredential
from ._errors import CredentialUnavailableError, ManagedIdentityError
from ._imds_cache import __version__

ENDPOINTS = """\
how the endpoint is chosen (the first that applies, as azure-identity does):
  IDENTITY_ENDPOINT + IDENTITY_HEADER + IDENTITY_SERVER_THUMBPRINT   Service Fabric
  IDENTITY_ENDPOINT + IDENTITY_HEADER                                App Service, Functions
  IDENTITY_ENDPOINT + IMDS_ENDPOINT                                  Azure Arc
  MSI_ENDPOINT + MSI_SECRET                                          App Service 2017, Azure ML
  MSI_ENDPOINT                                                       Cloud Shell
  AZURE_FEDERATED_TOKEN_FILE + AZURE_TENANT_ID    AKS workload identity: unavailable here
  otherwise IMDS at AZURE_POD_IDENTITY_AUTHORITY_HOST, else http://169.254.169.254
  (and the Azure Arc agent when it is installed, without the variables)

exit status: 0 with a token, 1 when none could be had, 2 on bad usage, 130 on Ctrl-C
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imds-cache",
        description="Tokens from the Azure managed identity endpoint.",
        epilog=ENDPOINTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imds-cache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token",
        help="print an access token",
        epilog=ENDPOINTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument(
        "--resource", required=True, help="the resource URI or scope, e.g. https://vault.azure.net"
    )
    who = token.add_mutually_exclusive_group()
    who.add_argument("--client-id", help="a user-assigned identity's client id")
    who.add_argument("--object-id", help="a user-assigned identity's object (principal) id")
    who.add_argument("--resource-id", help="a user-assigned identity's ARM resource id")
    token.add_argument(
        "--json", action="store_true", help="print JSON with the expiry, as az does"
    )
    token.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="give up after this long (default 90: longer than IMDS's 70 s update window)",
    )
    token.add_argument(
        "--verbose", "-v", action="store_true", help="log each request and retry to stderr"
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the exit status (see ``ENDPOINTS``)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("imds-cache: interrupted", file=sys.stderr)
        return 130


def _run(argv: Optional[List[str]]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    logger = logging.getLogger("imds_cache")
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="imds-cache: %(message)s")
    else:
        # The failure is this command's one line below; without a handler, Python would
        # also print the library's WARNING records of it.
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    config = {
        k: v
        for k, v in (
            ("client_id", args.client_id),
            ("object_id", args.object_id),
            ("resource_id", args.resource_id),
        )
        if v is not None
    }
    try:
        cache = TokenCache(deadline_s=args.timeout, refresher=False)
        with ManagedIdentityCredential(identity_config=config or None, cache=cache) as credential:
            info = credential.get_token_info(args.resource)
    except (CredentialUnavailableError, ManagedIdentityError, ValueError) as error:
        print(f"imds-cache: {error}", file=sys.stderr)
        return 1
    if args.json:
        local = datetime.datetime.fromtimestamp(info.expires_on)
        print(
            json.dumps(
                {
                    "accessToken": info.token,
                    "expiresOn": local.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    "expires_on": info.expires_on,
                    "tokenType": info.token_type,
                    "resource": args.resource,
                },
                indent=2,
            )
        )
    else:
        print(info.token)
    return 0
