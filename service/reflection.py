"""Server reflection over the default descriptor pool, able to resolve method names.

The upb descriptor pool does not find files by a method's full name
(`agenttasks.v1.TaskService.ClaimTask`), which `grpcurl describe` asks for; this pool
answers that from the method's service and delegates everything else.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection

SERVICE_NAME = reflection.SERVICE_NAME


class _MethodAwarePool:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable(service_names: list[str], server: Any) -> None:
    pool = _MethodAwarePool(descriptor_pool.Default())
    reflection.enable_server_reflection([*service_names, SERVICE_NAME], server, pool=pool)
