"""`AgentTasksError`: a failed call with the documented error body decoded from its details."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agenttasks.v1 import errors_pb2


class AgentTasksError(Exception):
    """A failed AgentTasks call.

    `code` is the documented code (`TASK_ALREADY_CLAIMED`, ...), `status_code` its HTTP-style
    number, `error` the message; `reason` is ErrorInfo.reason, `field_violations` the
    BadRequest's (field, description) pairs, `retry_delay` the RetryInfo delay in seconds
    (None without one). `grpc_code` and `rpc_error` keep the underlying gRPC failure. A
    failure that carries no details (a deadline, an unreachable server) has `code` set to
    the gRPC status name and `status_code` 0.
    """

    def __init__(self, rpc_error: grpc.RpcError) -> None:
        self.rpc_error = rpc_error
        call: grpc.Call = rpc_error  # type: ignore[assignment]
        self.grpc_code: grpc.StatusCode = call.code()
        self.error: str = call.details() or ""
        self.code: str = self.grpc_code.name
        self.status_code = 0
        self.reason = ""
        self.field_violations: list[tuple[str, str]] = []
        self.retry_delay: float | None = None
        self._decode(call)
        super().__init__(f"{self.code}: {self.error}")

    def _decode(self, call: grpc.Call) -> None:
        try:
            status = rpc_status.from_call(call)
        except ValueError:  # details that disagree with the status: keep the plain status
            return
        if status is None:
            return
        for packed in status.details:
            if packed.Is(errors_pb2.ErrorDetail.DESCRIPTOR):
                detail = errors_pb2.ErrorDetail()
                packed.Unpack(detail)
                self.code, self.status_code, self.error = (
                    detail.code,
                    detail.status_code,
                    detail.error,
                )
            elif packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                self.reason = info.reason
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                self.field_violations = [(v.field, v.description) for v in bad.field_violations]
            elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                packed.Unpack(retry)
                self.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
