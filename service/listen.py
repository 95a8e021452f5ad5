"""Whether a listening port is free, asked before gRPC (which shares ports) binds it."""

from __future__ import annotations

import errno
import socket

from .config import ConfigError


def in_use_message(port: int) -> str:
    return f"port {port} is already in use (--port / AGENTTASKS_PORT)"


def ensure_free(host: str, port: int) -> None:
    """ConfigError if something listens on host:port; binds a plain socket, then closes it.

    gRPC sets SO_REUSEPORT, so its own bind succeeds beside another server and the kernel
    splits calls between them; a socket without it fails as it should.
    """
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise ConfigError(f"--host (AGENTTASKS_HOST): cannot resolve {host!r} ({error})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As gRPC does: connections of an earlier server in TIME_WAIT do not block a restart.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(in_use_message(port)) from None
            message = f"--host / --port: cannot listen on {host}:{port} ({error.strerror})"
            raise ConfigError(message) from None
