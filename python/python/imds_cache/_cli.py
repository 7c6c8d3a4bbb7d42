"""``imds-cache token --resource URL [--client-id ID | --object-id ID | --resource-id ID]
[--json]``: a token from the managed identity, as ``az account get-access-token`` prints it."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import List, Optional

from ._credential import ManagedIdentityCredential
from ._errors import CredentialUnavailableError, ManagedIdentityError
from ._imds_cache import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imds-cache", description="Tokens from the Azure managed identity endpoint."
    )
    parser.add_argument("--version", action="version", version=f"imds-cache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print an access token")
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
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the exit status (0, 1 on an error, 2 on bad usage)."""
    args = _parser().parse_args(argv)
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
        with ManagedIdentityCredential(identity_config=config or None) as credential:
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
