"""Fixtures: the bundled IMDS emulator (a real server on loopback), a clean environment,
and a self-signed certificate for the HTTPS tests. The tests import the installed wheel:
nothing here puts the source tree on sys.path."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
EMULATOR = Path(os.environ.get("IMDS_EMULATOR", REPO / "target" / "release" / "imds-emulator"))

ARM = "https://management.azure.com"
VAULT = "https://vault.azure.net"
STORAGE = "https://storage.azure.com"

# Variables that select an endpoint (D11) or a proxy: each test starts without them.
ENDPOINT_VARS = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "DEFAULT_IDENTITY_CLIENT_ID",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
)


class Emulator:
    """A running `imds-emulator` process and its control API."""

    def __init__(self, *args: str) -> None:
        if not EMULATOR.exists():
            raise RuntimeError(f"{EMULATOR} is missing: cargo build --release -p imds-emulator")
        self.proc = subprocess.Popen(
            [str(EMULATOR), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url
        self.config: Dict[str, Any] = self.get("/control/config")
        self.identities: List[Dict[str, Any]] = self.get("/control/identities")["identities"]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.load(r)

    def post(self, path: str, body: Optional[Any] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def stats(self) -> Dict[str, Any]:
        stats: Dict[str, Any] = self.get("/control/stats")
        return stats

    def requests(self) -> int:
        return int(self.stats()["requests"])

    def tokens(self) -> List[Dict[str, Any]]:
        tokens: List[Dict[str, Any]] = self.get("/control/tokens")
        return tokens

    def issued(self, token: str) -> Optional[Dict[str, Any]]:
        return next((t for t in self.tokens() if t["token"] == token), None)

    def faults(self, *rules: Dict[str, Any]) -> None:
        self.post("/control/faults?replace=true", list(rules))

    def user(self, i: int) -> Dict[str, Any]:
        return self.identities[i]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENDPOINT_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emulator_factory() -> Iterator[Any]:
    started: List[Emulator] = []

    def start(*args: str) -> Emulator:
        e = Emulator(*args)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def emulator(emulator_factory: Any) -> Emulator:
    e: Emulator = emulator_factory("--identities", "4")
    return e


@pytest.fixture
def imds(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator in IMDS mode, found through D11 detection."""
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.url)
    return emulator


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost: {"cert": path, "key": path}."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return {"cert": str(cert_path), "key": str(key_path)}
