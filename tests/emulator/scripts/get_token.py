"""Gets one token with azure-identity's ManagedIdentityCredential and prints it.

Usage: get_token.py SCOPE [CLIENT_ID]. The environment points the credential at the
emulator (AZURE_POD_IDENTITY_AUTHORITY_HOST for IMDS, IDENTITY_ENDPOINT/IDENTITY_HEADER for
App Service). Prints the token and its expiry, one per line.
"""

import sys

from azure.identity import ManagedIdentityCredential


def main() -> None:
    scope = sys.argv[1]
    client_id = sys.argv[2] if len(sys.argv) > 2 else None
    cred = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    tok = cred.get_token(scope)
    print(tok.token)
    print(tok.expires_on)


if __name__ == "__main__":
    main()
