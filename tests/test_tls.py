"""TLS and mutual TLS: with a certificate the server speaks TLS only."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agenttasks.server.domain import teams
from agenttasks.v1 import teams_pb2

from .conftest import start_server
from .helpers import Client
from .test_cli import agenttasks


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _issue(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signer = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    pem = Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return pem, (subject, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_signer = _issue("Test CA", None)
    server, _ = _issue("server", ca_signer)
    client, _ = _issue("client", ca_signer)
    files = {
        "ca": ca.cert,
        "server.crt": server.cert,
        "server.key": server.key,
        "client.crt": client.cert,
        "client.key": client.key,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def _who(channel: grpc.Channel, key: str) -> str:
    return Client(channel, key).teams.WhoAmI(teams_pb2.WhoAmIRequest(), timeout=5).team_id


def test_tls_serves_secure_calls_and_refuses_plaintext(database_url, pki):
    team, key = teams.create_team("TLS team")
    running = start_server(tls_cert=str(pki["server.crt"]), tls_key=str(pki["server.key"]))
    try:
        trust = grpc.ssl_channel_credentials(pki["ca"].read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{running.port}", trust) as channel:
            assert _who(channel, key) == team.id
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                _who(channel, key)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)


def test_mutual_tls_needs_a_client_certificate(database_url, pki):
    team, key = teams.create_team("mTLS team")
    running = start_server(
        tls_cert=str(pki["server.crt"]),
        tls_key=str(pki["server.key"]),
        tls_client_ca=str(pki["ca"]),
    )
    address = f"127.0.0.1:{running.port}"
    ca = pki["ca"].read_bytes()
    try:
        with_cert = grpc.ssl_channel_credentials(
            ca, pki["client.key"].read_bytes(), pki["client.crt"].read_bytes()
        )
        with grpc.secure_channel(address, with_cert) as channel:
            assert _who(channel, key) == team.id
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca)) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                _who(channel, key)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)


@pytest.mark.parametrize(
    ("cert", "key", "says"),
    [
        ("garbage.pem", "server.key", "(AGENTTASKS_TLS_CERT): 'garbage.pem' is not a PEM"),
        ("server.crt", "client.key", "--tls-key (AGENTTASKS_TLS_KEY): 'client.key' is not the"),
    ],
)
def test_an_invalid_certificate_or_key_is_a_bad_setting(pki, tmp_path, cert, key, says):
    for name in ("server.crt", "server.key", "client.key"):
        (tmp_path / name).write_bytes(pki[name].read_bytes())
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    done = agenttasks(
        "serve", "--tls-cert", cert, "--tls-key", key, "--db", "sqlite:///x.db", cwd=tmp_path
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert says in done.stderr, done.stderr
