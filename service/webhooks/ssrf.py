"""The SSRF guard: which webhook URLs may be called, and the checked address to call."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


class Refused(ValueError):
    """A URL that may not be called; the message says why (it never holds a secret)."""


@dataclass(frozen=True)
class Target:
    """A URL with the address it resolved to and passed the guard: connect to `address`."""

    scheme: str
    host: str  # the name, for the Host header and TLS (SNI and certificate)
    port: int
    path: str  # path and query
    address: str


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    )


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL, or Refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise Refused(f"is not a valid URL ({error})") from None
    if parts.scheme not in SCHEMES:
        raise Refused("must be an http or https URL")
    if not parts.hostname:
        raise Refused("must name a host")
    if parts.username or parts.password:
        raise Refused("must not hold a user name or password")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], path


def resolve(url: str, allow_private: bool) -> Target:
    """Resolves the URL's host once and checks every address it has.

    A name with any non-public address is refused (unless `allow_private`): the caller
    connects to the returned address, so no later lookup can swap in another one.
    """
    scheme, host, port, path = parse(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Refused(f"host {host[:100]!r} does not resolve") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise Refused(f"host {host[:100]!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise Refused(
                    f"resolves to {address}, a loopback, private, link-local, multicast or "
                    "unspecified address"
                )
    return Target(scheme, host, port, path, str(addresses[0]))
