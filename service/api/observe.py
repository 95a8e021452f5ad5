"""Per-call log line, request id and Prometheus counts, for every call the server sees.

Outside the gate, so refused calls (bad token, rate limit) are counted and logged too. The
door (api/door.py) puts the caller in the call's record once the gate has admitted it. The
request id goes back in the response's trailing metadata.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

from .. import logs
from ..domain.values import Caller
from ..metrics import Metrics

log = logging.getLogger(logs.CALLS)

REQUEST_ID = "x-request-id"
# A client's id is echoed and logged, so only plain ids are kept, and nothing shaped like
# a token (a careless client might send one there): those get a generated id instead.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,100}")
_SECRET_LIKE = re.compile(r"(tk|at)_[0-9a-f]{16}|whsec_", re.IGNORECASE)
# Refusals an operator watches for (credential stuffing, a runaway client): WARNING.
_UNAUTHENTICATED, _EXHAUSTED = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass(slots=True)
class CallRecord:
    """What is known about one call; the gate adds the caller when it admits it."""

    request_id: str
    peer: str
    metadata: tuple  # the client's, as (key, value) pairs
    caller: Caller | None = None  # once the gate has admitted the call


_record: contextvars.ContextVar[CallRecord] = contextvars.ContextVar("call_record")


def go_code(code: grpc.StatusCode) -> str:
    """The code as go-grpc-prometheus spells it: `NOT_FOUND` -> `NotFound`."""
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code is grpc.StatusCode.OK:
        return "OK"
    return "".join(word.capitalize() for word in code.name.split("_"))


def current_call() -> CallRecord:
    """The record of the call being handled (on this thread or asyncio task)."""
    return _record.get()


def current_request_id() -> str | None:
    """The request id of the call being handled (for error messages that quote it)."""
    record = _record.get(None)
    return record.request_id if record is not None else None


def _request_id(metadata) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID and isinstance(value, str):
            value = value.strip()
            if _PLAIN_ID.fullmatch(value) and not _SECRET_LIKE.search(value):
                return value
    return os.urandom(16).hex()


def _documented_code(context) -> str:
    """The documented error code (e.g. TASK_ALREADY_CLAIMED) of an aborted call, or ""."""
    for key, value in context.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason
    return ""


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _status(context, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, int):
        code = _STATUS_CODES.get(code, grpc.StatusCode.UNKNOWN)
    if code is not None:
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    if isinstance(error, BaseException) and not isinstance(error, Exception):
        # Cancelled by the client, or its deadline passed.
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class Observer:
    """Wraps handlers (once, when they are registered) to log, count and id every call."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    def wrap(self, method: str, kind: str, inner: Callable) -> Callable:
        """`inner` (an async function or async generator of (request, context)), observed."""
        call = _Method(method, kind, self._metrics)
        if inspect.isasyncgenfunction(inner):

            async def observed_stream(request, context):
                record, started = call.begin(context)
                error = None
                try:
                    async for response in inner(request, context):
                        yield response
                except BaseException as caught:
                    error = caught
                    raise
                finally:
                    # A stream closed by cancellation or by its generator being finalised
                    # may outlive its call: its context must not be touched then (grpcio
                    # crashes).
                    ended = error is not None and not isinstance(error, Exception)
                    call.end(record, None if ended else context, started, error)

            return observed_stream

        async def observed(request, context):
            record, started = call.begin(context)
            error = None
            try:
                return await inner(request, context)
            except BaseException as caught:
                error = caught
                raise
            finally:
                call.end(record, context, started, error)

        return observed


class _Method:
    """What every call of one method shares: its names and its metric series."""

    def __init__(self, method: str, kind: str, metrics: Metrics | None) -> None:
        self.method = method.lstrip("/")
        service, _, name = self.method.partition("/")
        self.series = metrics.series(kind, service, name) if metrics is not None else None

    def begin(self, context) -> tuple[CallRecord, float]:
        metadata = context.invocation_metadata()
        record = CallRecord(_request_id(metadata), context.peer(), metadata)
        _record.set(record)
        # In the trailers: initial metadata would be a batch of its own in gRPC core (about
        # a tenth of a small call's cost); the trailers go with the response anyway.
        context.set_trailing_metadata(((REQUEST_ID, record.request_id),))
        if self.series is not None:
            self.series.started()
        return record, time.perf_counter()

    def end(self, record: CallRecord, context, started: float, error: BaseException | None):
        seconds = time.perf_counter() - started
        code = _status(context, error) if context is not None else grpc.StatusCode.CANCELLED
        if self.series is not None:
            self.series.handled(go_code(code), seconds)
        warn = code is _UNAUTHENTICATED or code is _EXHAUSTED
        level = logging.WARNING if warn else logging.INFO
        if not log.isEnabledFor(level):
            return
        failed = context is not None and code is not grpc.StatusCode.OK
        reason = _documented_code(context) if failed else ""
        caller = record.caller
        team_id = caller.team_id if caller is not None else ""
        agent_id = (caller.agent_id if caller is not None else None) or ""
        fields = {
            "method": self.method,
            "code": code.name,
            "error_code": reason,
            "duration_ms": round(seconds * 1000, 1),
            "peer": record.peer,
            "team_id": team_id,
            "agent_id": agent_id,
            "request_id": record.request_id,
        }
        message = (
            f"{self.method} {code.name}{' ' + reason if reason else ''} "
            f"{fields['duration_ms']:.1f}ms peer={record.peer} team={team_id or '-'} "
            f"agent={agent_id or '-'} request_id={record.request_id}"
        )
        lines = logs.call_lines
        if lines is not None and lines.in_charge(log):
            lines.write(level, message, fields)
        else:
            log.log(level, message, extra={"call": fields})
