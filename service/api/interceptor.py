"""The gRPC door: admits each call through the gate, runs it, and reports errors as statuses.

Unary handlers are plain functions run on the database thread pool, one hop per call
(admission and the handler together); `async` handlers (ClaimNextTask, WatchTasks) stay on
the event loop and park their waits there, so a waiting call holds no thread.

On SQLite, handlers marked `reads_only` run on the event loop thread itself: a WAL reader
never waits for a lock, answers in microseconds, and the hop to a pool thread and back
cost more than the read. Should the call write after all (admission writes a rate-limit
bucket or an agent's last activity now and then), it is handed to the pool from the start.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import grpc

from ..domain.errors import AgentTasksError, InternalError
from ..domain.values import Caller, own_team
from ..gate import Gate
from ..permissions import is_public
from ..storage import db
from .errors import to_status
from .observe import note_caller

log = logging.getLogger(__name__)

_current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """The caller of the RPC being handled (on this thread or asyncio task)."""
    return _current_caller.get()


def client_address(peer: str) -> str:
    """`ipv4:127.0.0.1:5000` -> `127.0.0.1`; `ipv6:[::1]:5000` -> `[::1]`."""
    address = peer.partition(":")[2]
    return address.rsplit(":", 1)[0] if address.count(":") >= 1 else address


def _authorization(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


class Undecodable:
    """Stands in for a request whose bytes did not decode, so the gate can answer it."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    # grpcio answers a failing deserializer with INTERNAL, no details and a traceback per
    # request; returning a stand-in lets the gate answer VALIDATION_ERROR instead.
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:
            return Undecodable(error)

    return deserialize


class GateInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, gate: Gate, executor: Executor, *, reads_on_loop: bool = False) -> None:
        self._gate = gate
        self._executor = executor
        self._reads_on_loop = reads_on_loop

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_public(method):
            return handler
        authorization = _authorization(handler_call_details.invocation_metadata)

        def admit(request, context) -> Caller:
            address = client_address(context.peer())
            caller = self._gate.admit(method, authorization, address)
            note_caller(caller)  # for the call's log line
            if isinstance(request, Undecodable):
                log.warning(
                    "undecodable request to %s from %s: %s",
                    method,
                    address,
                    type(request.error).__name__,
                )
                self._gate.refuse_undecodable(address)
            if "team_id" in request.DESCRIPTOR.fields_by_name:
                own_team(caller, request.team_id)  # before any validation, as documented
            return caller

        if handler.request_deserializer is not None:
            handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        return _guarded(handler, method, admit, self._executor, self._reads_on_loop)


async def _report(error: Exception, method: str, context) -> None:
    """Aborts the call with the documented status for `error` (never returns)."""
    if isinstance(error, NotImplementedError):  # an RPC of the proto not served yet
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
    if not isinstance(error, AgentTasksError):
        request_id = uuid.uuid4().hex[:16]
        log.error("internal error in %s (request id %s)", method, request_id, exc_info=error)
        error = InternalError(f"Internal error (request id {request_id})")
    await context.abort_with_status(to_status(error))


def reads_only(method: Callable) -> Callable:
    """Marks a servicer method that only reads (see the module's note)."""
    method.reads_only = True  # type: ignore[attr-defined]
    return method


def _as_caller(caller: Caller, function: Callable, *args: Any) -> Any:
    reset = _current_caller.set(caller)
    try:
        return function(*args)
    finally:
        _current_caller.reset(reset)


def _guarded(
    handler,
    method: str,
    admit: Callable[[Any, Any], Caller],
    executor: Executor,
    reads_on_loop: bool,
):
    """The handler, run only for an admitted caller, with errors reported as statuses."""
    loop_run = asyncio.get_running_loop().run_in_executor

    if handler.unary_unary is not None:
        inner = handler.unary_unary
        if inspect.iscoroutinefunction(inner):

            async def unary_unary(request, context):
                try:
                    _current_caller.set(await loop_run(executor, admit, request, context))
                    return await inner(request, context)
                except Exception as error:
                    await _report(error, method, context)

        else:

            def admitted(request, context):
                return _as_caller(admit(request, context), inner, request, context)

            on_loop = reads_on_loop and getattr(inner, "reads_only", False)

            async def unary_unary(request, context):
                try:
                    if on_loop:
                        try:
                            with db.reads_only(), db.connected():
                                return admitted(request, context)
                        except db.WriteNotHere:
                            pass
                    return await loop_run(executor, admitted, request, context)
                except Exception as error:
                    await _report(error, method, context)

        return handler._replace(unary_unary=unary_unary)

    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        inner_stream = handler.unary_stream

        async def unary_stream(request, context):
            try:
                _current_caller.set(await loop_run(executor, admit, request, context))
                async for response in inner_stream(request, context):
                    yield response
            except Exception as error:
                await _report(error, method, context)

        return handler._replace(unary_stream=unary_stream)

    # Only unary calls and async server streams exist; refuse anything else unauthenticated.
    raise ValueError(f"unsupported handler type for {method}")
