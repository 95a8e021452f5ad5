"""The one mapping from domain errors to gRPC statuses with the documented details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from agenttasks.v1 import errors_pb2

from ..domain import errors as e

DOMAIN = "agenttasks"

GRPC_CODES: dict[type[e.AgentTasksError], grpc.StatusCode] = {
    e.Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    e.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    e.NotAssignedAgent: grpc.StatusCode.PERMISSION_DENIED,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    e.TaskAlreadyClaimed: grpc.StatusCode.FAILED_PRECONDITION,
    e.TaskNotClaimable: grpc.StatusCode.FAILED_PRECONDITION,
    e.TaskNotInProgress: grpc.StatusCode.FAILED_PRECONDITION,
    e.InvalidTransition: grpc.StatusCode.FAILED_PRECONDITION,
    e.EtagMismatch: grpc.StatusCode.ABORTED,
    e.ProjectNotEmpty: grpc.StatusCode.FAILED_PRECONDITION,
    e.EventsExpired: grpc.StatusCode.FAILED_PRECONDITION,
    e.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.InternalError: grpc.StatusCode.INTERNAL,
}


def _packed(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: e.AgentTasksError) -> grpc.Status:
    """The gRPC status for a domain error: message = `error`, details = the documented body."""
    grpc_code = GRPC_CODES[type(error)]
    details = [
        _packed(
            error_details_pb2.ErrorInfo(
                reason=error.code,
                domain=DOMAIN,
                metadata={"statusCode": str(error.status_code)},
            )
        ),
        _packed(
            errors_pb2.ErrorDetail(
                error=error.message, code=error.code, status_code=error.status_code
            )
        ),
    ]
    if isinstance(error, e.ValidationError):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    if isinstance(error, e.RateLimited):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1, int(error.retry_after_seconds * 1e9)))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(
        code=getattr(code_pb2, grpc_code.name), message=error.message, details=details
    )
    return rpc_status.to_status(status)
