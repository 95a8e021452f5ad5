"""The gRPC door: every handler is wrapped once, when the server registers it.

A call is observed (request id, log line, metrics: `observe.py`), admitted through the
gate (token, rate limit, permission: `gate.py`), run, and its errors are reported as the
documented statuses (`errors.py`). Wrapping at registration, not in grpc.aio
interceptors, spares every call the interceptor pipeline and the wrappers it builds.

Unary handlers do their database work where `dbwork.DatabaseWork` puts it: on the event
loop on SQLite, on the database threads on PostgreSQL; admission runs with the handler.
`async` handlers (ClaimNextTask, WatchTasks) stay on the loop and park their waits there,
so a waiting call holds no thread; their admission is placed like a unary call.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any

import grpc

from ..dbwork import DatabaseWork, answered_with_group
from ..domain.errors import AgentTasksError, InternalError
from ..domain.values import Caller, own_team
from ..gate import Gate
from ..permissions import is_public
from .errors import to_status
from .observe import Observer, current_call
from .replies import Replies

log = logging.getLogger(__name__)


def current_caller() -> Caller:
    """The admitted caller of the RPC being handled (on this thread or asyncio task)."""
    caller = current_call().caller
    assert caller is not None, "a gated handler runs only once its caller is admitted"
    return caller


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


@cache
def _has_team_id(message: Any) -> bool:
    """Whether requests of this message type (a descriptor) name a team (`team_id`)."""
    return "team_id" in message.fields_by_name


class _Handlers:
    """Stands in for the server while a generated `add_*_to_server` runs: keeps the
    method handlers it registers, by service."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # built from the same handlers, which come next by name (see Door.add)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.services[service] = handlers


_KINDS = (
    ("unary_unary", "unary"),
    ("unary_stream", "server_stream"),
    ("stream_unary", "client_stream"),
    ("stream_stream", "bidi_stream"),
)


class Door:
    def __init__(self, gate: Gate, observer: Observer, work: DatabaseWork) -> None:
        self._gate = gate
        self._observer = observer
        self._run = work.run
        self._replies = Replies()

    def add(self, server: grpc.aio.Server, add_to_server: Callable, servicer: Any) -> None:
        """Registers `servicer` through its generated `add_*_to_server`, every method wrapped."""
        collected = _Handlers()
        add_to_server(servicer, collected)
        for service, handlers in collected.services.items():
            wrapped = {
                name: self._wrap(f"/{service}/{name}", handler)
                for name, handler in handlers.items()
            }
            # Generic handlers only, unlike the generated code, which also registers each
            # method with gRPC core: grpc.aio admits the calls of a registered method
            # through a queue of that method's own, one call per turn of the event loop.
            # Under load the busiest method's calls then waited for admission many times
            # longer than the others' (in a claim-then-read loop, claims 79-92 ms and the
            # reads 7-10 ms at the median); unregistered calls share one queue, in arrival
            # order.
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, wrapped),)
            )

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        attribute, kind = next((a, k) for a, k in _KINDS if getattr(handler, a) is not None)
        inner = getattr(handler, attribute)
        if not is_public(method):
            inner = self._guarded(method, inner)
            handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        return handler._replace(**{attribute: self._observer.wrap(method, kind, inner)})

    def _guarded(self, method: str, inner: Callable) -> Callable:
        """The handler, run only for an admitted caller, with errors reported as statuses."""
        gate = self._gate

        def admit(request, context) -> None:
            """Puts the admitted caller in the call's record (and so in its log line)."""
            call = current_call()
            if call.caller is not None:
                # The work runs again on the pool (see dbwork): admitted, and charged
                # against the rate limits, once.
                return
            address = client_address(call.peer)
            caller = call.caller = gate.admit(method, _authorization(call.metadata), address)
            if isinstance(request, Undecodable):
                log.warning(
                    "undecodable request to %s from %s: %s",
                    method,
                    address,
                    type(request.error).__name__,
                )
                gate.refuse_undecodable(address)
            if _has_team_id(request.DESCRIPTOR):
                own_team(caller, request.team_id)  # before any validation, as documented

        if inspect.isasyncgenfunction(inner):

            async def stream(request, context):
                try:
                    await self._run(admit, request, context)
                    async for response in inner(request, context):
                        yield response
                except Exception as error:
                    await _report(error, method, context)

            return stream

        if inspect.iscoroutinefunction(inner):

            async def waits(request, context):
                try:
                    await self._run(admit, request, context)
                    return await inner(request, context)
                except Exception as error:
                    await _report(error, method, context)

            return waits

        def admitted(request, context):
            admit(request, context)
            return inner(request, context)

        replies = self._replies

        async def unary(request, context):
            try:
                response = await self._run(admitted, request, context)
            except Exception as error:
                await _report(error, method, context)
            if not answered_with_group.get():
                await replies.ready()
            return response

        return unary


async def _report(error: Exception, method: str, context) -> None:
    """Aborts the call with the documented status for `error` (never returns)."""
    if isinstance(error, NotImplementedError):  # an RPC of the proto not served yet
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
    if not isinstance(error, AgentTasksError):
        request_id = uuid.uuid4().hex[:16]
        log.error("internal error in %s (request id %s)", method, request_id, exc_info=error)
        error = InternalError(f"Internal error (request id {request_id})")
    status = to_status(error)
    # The status's trailers (its details) join those already set (the request id).
    trailers = tuple(status.trailing_metadata) + tuple(context.trailing_metadata())
    await context.abort(status.code, status.details, trailers)
