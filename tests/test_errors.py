"""The error mapping: every documented error has exactly one status, with its details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from agenttasks.server.api.errors import GRPC_CODES, to_status
from agenttasks.server.domain import errors
from agenttasks.server.domain.errors import all_error_classes
from agenttasks.v1 import errors_pb2

from .helpers import EXPECTED


def test_every_error_class_is_mapped():
    assert set(all_error_classes()) == set(GRPC_CODES)


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda cls: cls.__name__)
def test_each_class_matches_the_documented_table(cls):
    grpc_code, status_code = EXPECTED[cls.code]
    assert (GRPC_CODES[cls], cls.status_code) == (grpc_code, status_code)


def _details(status: grpc.Status) -> dict[str, object]:
    from google.rpc import status_pb2

    ((key, value),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    found: dict[str, object] = {}
    for packed in status_pb2.Status.FromString(value).details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            errors_pb2.ErrorDetail,
        ):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                found[cls.DESCRIPTOR.name] = message
    return found


def test_validation_errors_carry_one_violation_per_field():
    error = errors.ValidationError(
        [
            errors.FieldViolation("title", "must not be empty"),
            errors.FieldViolation("priority", "bad"),
        ]
    )
    status = to_status(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "title: must not be empty; priority: bad"
    details = _details(status)
    assert [v.field for v in details["BadRequest"].field_violations] == ["title", "priority"]
    assert details["ErrorDetail"] == errors_pb2.ErrorDetail(
        error=status.details, code="VALIDATION_ERROR", status_code=400
    )
    assert details["ErrorInfo"].metadata["statusCode"] == "400"


def test_rate_limited_carries_retry_info():
    details = _details(to_status(errors.RateLimited(2.5)))
    assert details["RetryInfo"].retry_delay.ToMilliseconds() == 2500
    assert "BadRequest" not in details


def test_error_detail_serialises_status_code_as_camel_case_json():
    from google.protobuf import json_format

    detail = errors_pb2.ErrorDetail(error="x", code="NOT_FOUND", status_code=404)
    assert json_format.MessageToDict(detail) == {
        "error": "x",
        "code": "NOT_FOUND",
        "statusCode": 404,
    }
