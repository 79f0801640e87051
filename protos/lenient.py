"""`pb.LTVService` registered so that a request that is not a valid protobuf reaches the
method as `Undecodable` (which answers INVALID_ARGUMENT) instead of failing in grpcio's
deserializer, whose answer is UNKNOWN "Unexpected DecodeError". serve_config.yaml lists
`protos.lenient.add_LTVServiceServicer_to_server` for Serve's gRPC proxy, in place of the
generated function; the generated stubs stay as protoc writes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from protos import kiki_pb2


@dataclass(frozen=True)
class Undecodable:
    """What came instead of a `message` request: the parser's reason."""

    message: str
    reason: str


def _lenient(kind: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(raw: bytes) -> Message | Undecodable:
        try:
            return kind.FromString(raw)
        except DecodeError as exc:
            return Undecodable(kind.DESCRIPTOR.full_name, str(exc))

    return parse


def add_LTVServiceServicer_to_server(servicer: Any, server: grpc.Server) -> None:
    """The generated function's handlers, built from the service's descriptor, with lenient
    request deserializers."""
    service = kiki_pb2.DESCRIPTOR.services_by_name["LTVService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
