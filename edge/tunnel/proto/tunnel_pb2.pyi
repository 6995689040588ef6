# mypy: disable-error-code="type-arg"
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Target(_message.Message):
    __slots__ = ("host", "port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_name", "addresses", "agent_version", "allowed", "connected_servers")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SERVERS_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    agent_version: str
    allowed: _containers.RepeatedCompositeFieldContainer[Target]
    connected_servers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_name: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., agent_version: _Optional[str] = ..., allowed: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., connected_servers: _Optional[_Iterable[str]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("server_id", "peers", "accepted_addresses", "rejected_addresses", "ping_interval_ms")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PING_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    peers: _containers.RepeatedScalarFieldContainer[str]
    accepted_addresses: _containers.RepeatedScalarFieldContainer[str]
    rejected_addresses: _containers.RepeatedScalarFieldContainer[str]
    ping_interval_ms: int
    def __init__(self, server_id: _Optional[str] = ..., peers: _Optional[_Iterable[str]] = ..., accepted_addresses: _Optional[_Iterable[str]] = ..., rejected_addresses: _Optional[_Iterable[str]] = ..., ping_interval_ms: _Optional[int] = ...) -> None: ...

class Dial(_message.Message):
    __slots__ = ("conn_id", "host", "port", "timeout_ms")
    CONN_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    conn_id: str
    host: str
    port: int
    timeout_ms: int
    def __init__(self, conn_id: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class DialResult(_message.Message):
    __slots__ = ("conn_id", "code", "error")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[DialResult.Code]
        REFUSED: _ClassVar[DialResult.Code]
        TIMEOUT: _ClassVar[DialResult.Code]
        NOT_ALLOWED: _ClassVar[DialResult.Code]
        TOO_MANY: _ClassVar[DialResult.Code]
        UNREACHABLE: _ClassVar[DialResult.Code]
    OK: DialResult.Code
    REFUSED: DialResult.Code
    TIMEOUT: DialResult.Code
    NOT_ALLOWED: DialResult.Code
    TOO_MANY: DialResult.Code
    UNREACHABLE: DialResult.Code
    CONN_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    conn_id: str
    code: DialResult.Code
    error: str
    def __init__(self, conn_id: _Optional[str] = ..., code: _Optional[_Union[DialResult.Code, str]] = ..., error: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "dial_result", "pong")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    DIAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    dial_result: DialResult
    pong: Pong
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., dial_result: _Optional[_Union[DialResult, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "dial", "ping")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DIAL_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    dial: Dial
    ping: Ping
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., dial: _Optional[_Union[Dial, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("data", "close_write")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLOSE_WRITE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    close_write: bool
    def __init__(self, data: _Optional[bytes] = ..., close_write: _Optional[bool] = ...) -> None: ...
