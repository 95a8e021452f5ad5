"""Server reflection that resolves method names and serves the proto comments.

The upb descriptor pool does not find files by a method's full name
(`agenttasks.v1.TaskService.ClaimTask`), which `grpcurl describe` asks for, and its files
lack source info, so `describe` would show no comments. This pool answers method names
from the method's service, and hands out our files as compiled with their comments
(`make proto` writes the descriptor set beside the stubs).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

SERVICE_NAME = reflection.SERVICE_NAME


@cache
def documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Our .proto files with their source info (comments), by file name."""
    data = resources.files("agenttasks.v1").joinpath("descriptor_set.binpb").read_bytes()
    return {file.name: file for file in descriptor_pb2.FileDescriptorSet.FromString(data).file}


class _Documented:
    """A file descriptor whose proto copy keeps the comments (what reflection reads)."""

    def __init__(self, descriptor: Any) -> None:
        self._descriptor = descriptor
        self.name = descriptor.name

    @property
    def dependencies(self) -> list[_Documented]:
        return [_Documented(file) for file in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        # Only the comments are taken from the set: the rest stays as the stubs describe it
        # (grpcurl's JSON field names, for one, follow what reflection served before).
        self._descriptor.CopyToProto(proto)
        documented = documented_files().get(self.name)
        if documented is not None:
            proto.source_code_info.CopyFrom(documented.source_code_info)


class _ReflectionPool:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def FindFileByName(self, name: str) -> Any:
        return _Documented(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return _Documented(self._pool.FindFileContainingSymbol(symbol))
        except KeyError:
            return _Documented(self._pool.FindMethodByName(symbol).containing_service.file)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def servicer(service_names: list[str]) -> tuple[Callable, Any]:
    """The reflection service for `service_names` (and itself), with what registers it."""
    pool = _ReflectionPool(descriptor_pool.Default())
    served = reflection.aio.ReflectionServicer([*service_names, SERVICE_NAME], pool=pool)
    return reflection_pb2_grpc.add_ServerReflectionServicer_to_server, served
