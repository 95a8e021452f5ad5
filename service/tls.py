"""Server TLS credentials from PEM files, checked at start so a bad file is a bad setting."""

from __future__ import annotations

import ssl

import grpc

from .config import ConfigError, ServerConfig

CERT = "--tls-cert (AGENTTASKS_TLS_CERT)"
KEY = "--tls-key (AGENTTASKS_TLS_KEY)"
CLIENT_CA = "--tls-client-ca (AGENTTASKS_TLS_CLIENT_CA)"


def _read(setting: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path!r} ({error.strerror})") from None


def _reason(error: ssl.SSLError) -> str:
    return " ".join(str(error.reason or error).split())


def check(config: ServerConfig) -> tuple[bytes, bytes, bytes | None] | None:
    """(certificate, key, client CA) of `config`, None for plaintext, or a ConfigError
    naming the file. Uses only the ssl module, so it may run before a fork."""
    if not (config.tls_cert or config.tls_key or config.tls_client_ca):
        return None
    if not config.tls_cert or not config.tls_key:
        missing = CERT if not config.tls_cert else KEY
        raise ConfigError(f"{missing} is missing: TLS needs both a certificate and its key")
    cert, key = _read(CERT, config.tls_cert), _read(KEY, config.tls_key)
    # grpc would only fail at the first handshake; the ssl module checks the files now.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cadata=cert.decode("latin-1"))
    except (ssl.SSLError, ValueError) as error:
        detail = _reason(error) if isinstance(error, ssl.SSLError) else "no certificate"
        message = f"{CERT}: {config.tls_cert!r} is not a PEM certificate ({detail})"
        raise ConfigError(message) from None
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except ssl.SSLError as error:
        raise ConfigError(
            f"{KEY}: {config.tls_key!r} is not the PEM private key of the certificate "
            f"({_reason(error)})"
        ) from None
    client_ca = None
    if config.tls_client_ca:
        client_ca = _read(CLIENT_CA, config.tls_client_ca)
        try:
            context.load_verify_locations(cadata=client_ca.decode("latin-1"))
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                f"{CLIENT_CA}: {config.tls_client_ca!r} holds no PEM certificate"
            ) from None
    return cert, key, client_ca


def credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """gRPC TLS credentials for `config`, None for plaintext (ConfigError as `check`)."""
    files = check(config)
    if files is None:
        return None
    cert, key, client_ca = files
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
