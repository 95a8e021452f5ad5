import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_KIND_UNSPECIFIED: _ClassVar[TokenKind]
    TOKEN_KIND_TEAM_API_KEY: _ClassVar[TokenKind]
    TOKEN_KIND_AGENT: _ClassVar[TokenKind]
TOKEN_KIND_UNSPECIFIED: TokenKind
TOKEN_KIND_TEAM_API_KEY: TokenKind
TOKEN_KIND_AGENT: TokenKind

class Team(_message.Message):
    __slots__ = ("id", "name", "settings", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    settings: TeamSettings
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., settings: _Optional[_Union[TeamSettings, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TeamSettings(_message.Message):
    __slots__ = ("rate_limit_task_per_minute", "rate_limit_other_per_minute", "default_lease_duration")
    RATE_LIMIT_TASK_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_OTHER_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    rate_limit_task_per_minute: int
    rate_limit_other_per_minute: int
    default_lease_duration: _duration_pb2.Duration
    def __init__(self, rate_limit_task_per_minute: _Optional[int] = ..., rate_limit_other_per_minute: _Optional[int] = ..., default_lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetTeamRequest(_message.Message):
    __slots__ = ("team_id",)
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    def __init__(self, team_id: _Optional[str] = ...) -> None: ...

class GetTeamResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: Team
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ...) -> None: ...

class UpdateTeamRequest(_message.Message):
    __slots__ = ("team", "update_mask")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    team: Team
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateTeamResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: Team
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ...) -> None: ...

class RotateTeamApiKeyRequest(_message.Message):
    __slots__ = ("team_id", "grace_period")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    grace_period: _duration_pb2.Duration
    def __init__(self, team_id: _Optional[str] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RotateTeamApiKeyResponse(_message.Message):
    __slots__ = ("team", "api_key")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    team: Team
    api_key: str
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ..., api_key: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("team_id", "token_kind", "agent_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    token_kind: TokenKind
    agent_id: str
    def __init__(self, team_id: _Optional[str] = ..., token_kind: _Optional[_Union[TokenKind, str]] = ..., agent_id: _Optional[str] = ...) -> None: ...
