"""The real Azure SDK for Python with our credential, no mocks: azure-core's bearer-token
policies in real pipelines against a local HTTPS server, and azure-storage-blob against
Azurite (the Azure Storage emulator), with tokens from the IMDS emulator."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from azure.core.pipeline import AsyncPipeline, Pipeline
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    BearerTokenCredentialPolicy,
)
from azure.core.pipeline.transport import AioHttpTransport, RequestsTransport
from azure.core.rest import HttpRequest

import imds_cache
import imds_cache.aio
from imds_cache import TokenCache

from conftest import STORAGE, Emulator

HERE = Path(__file__).resolve().parent


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: List[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        auth = self.headers.get("Authorization", "")
        type(self).seen.append(auth)
        ok = auth.startswith("Bearer ") and len(auth) > 100
        body = json.dumps({"ok": ok}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def https_server(certificate: Dict[str, str]) -> Iterator[str]:
    _Handler.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate["cert"], certificate["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bearer_token_policy_in_a_pipeline(
    imds: Emulator, https_server: str, certificate: Dict[str, str]
) -> None:
    credential = imds_cache.ManagedIdentityCredential(
        client_id=imds.user(1)["client_id"], cache=TokenCache()
    )
    policy = BearerTokenCredentialPolicy(credential, "https://vault.azure.net/.default")
    with Pipeline(transport=RequestsTransport(connection_verify=certificate["cert"]), policies=[policy]) as pipeline:
        for _ in range(3):
            response = pipeline.run(HttpRequest("GET", https_server + "/secrets")).http_response
            assert response.status_code == 200 and response.json() == {"ok": True}
    tokens = {h[len("Bearer "):] for h in _Handler.seen}
    assert len(tokens) == 1
    issued = imds.issued(tokens.pop())
    assert issued is not None and issued["client_id"] == imds.user(1)["client_id"]
    assert issued["resource"] == "https://vault.azure.net"
    assert imds.requests() == 1


def test_async_bearer_token_policy_with_aiohttp(
    imds: Emulator, https_server: str, certificate: Dict[str, str]
) -> None:
    async def run() -> None:
        credential = imds_cache.aio.ManagedIdentityCredential(cache=TokenCache())
        policy = AsyncBearerTokenCredentialPolicy(credential, "https://vault.azure.net/.default")
        transport = AioHttpTransport(connection_verify=certificate["cert"])
        async with AsyncPipeline(transport=transport, policies=[policy]) as pipeline:
            responses = await asyncio.gather(
                *(pipeline.run(HttpRequest("GET", https_server + "/keys")) for _ in range(5))
            )
            for r in responses:
                assert r.http_response.status_code == 200
        await credential.close()

    asyncio.run(run())
    tokens = {h[len("Bearer "):] for h in _Handler.seen}
    assert len(_Handler.seen) == 5 and len(tokens) == 1
    assert imds.issued(tokens.pop()) is not None
    assert imds.requests() == 1


def _azurite() -> Path:
    found = HERE / "node_modules" / ".bin" / "azurite-blob"
    if not found.exists():
        raise RuntimeError(f"{found} is missing: npm install --prefix {HERE}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def azurite(certificate: Dict[str, str], tmp_path: Path) -> Iterator[str]:
    if shutil.which("node") is None:
        raise RuntimeError("node is required for Azurite")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(_azurite()),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--location", str(tmp_path),
            "--oauth", "basic",
            "--cert", certificate["cert"],
            "--key", certificate["key"],
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                proc.kill()
                raise RuntimeError(f"Azurite did not start: {out}")
            time.sleep(0.1)
    yield f"https://127.0.0.1:{port}/devstoreaccount1"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_blob_storage_on_azurite_with_our_token(
    imds: Emulator, azurite: str, certificate: Dict[str, str]
) -> None:
    from azure.storage.blob import BlobServiceClient

    credential = imds_cache.ManagedIdentityCredential(
        identity_config={"object_id": imds.user(2)["object_id"]}, cache=TokenCache()
    )
    service = BlobServiceClient(azurite, credential=credential, connection_verify=certificate["cert"])
    container = service.create_container("imds-cache")
    blob = container.get_blob_client("hello.txt")
    blob.upload_blob(b"a token from a managed identity, checked by Azurite")
    assert blob.download_blob().readall() == b"a token from a managed identity, checked by Azurite"
    assert [b.name for b in container.list_blobs()] == ["hello.txt"]
    # The token came from the emulator, for storage, for that identity, fetched once.
    minted = [t for t in imds.tokens() if t["resource"] == STORAGE]
    assert len(minted) == 1 and minted[0]["client_id"] == imds.user(2)["client_id"]
    assert imds.requests() == 1


def test_azurite_refuses_a_token_for_another_audience(
    imds: Emulator, azurite: str, certificate: Dict[str, str]
) -> None:
    """The control: Azurite really checks the token (aud), so the test above proves it."""
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobServiceClient

    class WrongAudience:
        def __init__(self) -> None:
            self.inner = imds_cache.ManagedIdentityCredential(cache=TokenCache())

        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return self.inner.get_token("https://vault.azure.net/.default")

    service = BlobServiceClient(azurite, credential=WrongAudience(), connection_verify=certificate["cert"])
    with pytest.raises(HttpResponseError) as caught:
        service.create_container("refused")
    assert caught.value.status_code in (401, 403)
