"""The HTTP sender: one POST to a checked address, bounded in time and in what it reads."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx

from . import ssrf

TIMEOUT_S = 10.0  # success is a 2xx within this (SPEC §6)
CONNECT_TIMEOUT_S = 5.0
BODY_KEPT = 1024  # bytes of the response body kept in the attempt log; no more is read

# httpx logs every request's URL at INFO; a receiver's URL may carry its own credentials,
# and every attempt is in the delivery log already.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status (0 if none), how long it took, what went wrong."""

    status_code: int
    duration_us: int
    error: str = ""
    response_body: str = ""

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300 and not self.error


def _netloc(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class HttpSender:
    """Sends with httpx: redirects are not followed and connections are not reused (each
    attempt connects to the address the guard checked, named by Host header and SNI)."""

    def __init__(self, allow_private: bool = False, timeout: float = TIMEOUT_S) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_S, timeout)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            trust_env=False,  # a proxy from the environment would undo the address check
        )

    def close(self) -> None:
        self._client.close()

    def send(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1_000_000)

        try:
            target = ssrf.resolve(url, self.allow_private)
        except ssrf.Refused as refused:
            return Outcome(0, took(), f"refused: the URL {refused}")
        default_port = ssrf.DEFAULT_PORTS[target.scheme]
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        request = self._client.build_request(
            "POST",
            f"{target.scheme}://{_netloc(target.address, target.port)}{target.path}",
            headers={**headers, "Host": host_header},
            content=body,
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        try:
            response = self._client.send(request, stream=True)
            try:
                kept = b""
                for chunk in response.iter_raw():
                    kept += chunk
                    if len(kept) >= BODY_KEPT or time.monotonic() - started > self.timeout:
                        break
            finally:
                response.close()
        except httpx.TimeoutException:
            return Outcome(0, took(), f"timed out after {self.timeout:g} s")
        except httpx.HTTPError as error:
            return Outcome(0, took(), f"{type(error).__name__}: {str(error)[:200]}")
        text = kept[:BODY_KEPT].decode("utf-8", "replace")
        duration = took()
        if duration > self.timeout * 1_000_000:
            return Outcome(response.status_code, duration, "answered too late", text)
        problem = ""
        if 300 <= response.status_code < 400:
            problem = "redirects are not followed"
        elif not 200 <= response.status_code < 300:
            problem = f"HTTP {response.status_code}"
        return Outcome(response.status_code, duration, problem, text)
