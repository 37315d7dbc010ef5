"""Server reflection under both grpc.reflection.v1 and v1alpha, with the contract's comments.

grpcio-reflection serves only v1alpha. The v1 protocol is the same messages under another
package, so the v1alpha servicer answers both, and a renamed copy of its descriptor makes
the v1 service describable too.

The descriptors the generated code registers carry no comments, so `grpcurl describe` would
show none of the contract's documentation: our own files are served from the descriptor set
that `make proto` writes with their source info beside this module instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

log = logging.getLogger(__name__)

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
DOCUMENTED = Path(__file__).with_name("campaign_descriptor.binpb")


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(".grpc.reflection.v1alpha."):
                field.type_name = field.type_name.replace(".v1alpha.", ".v1.", 1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.", 1)
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.", 1)
    proto.options.Clear()
    pool.Add(proto)


def documented_files(path: Path = DOCUMENTED) -> dict[str, bytes]:
    """Our .proto files as serialized FileDescriptorProtos with their comments, by name."""
    try:
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except OSError as exc:
        log.warning("reflection serves the contract without its comments: %s", exc)
        return {}
    return {f.name: f.SerializeToString() for f in descriptors.file}


# Its private methods, which this extends, are not in the published stubs.
_Servicer: Any = reflection.aio.ReflectionServicer


class DocumentedReflection(_Servicer):  # type: ignore[misc]
    """The reflection servicer, with our files' descriptors swapped for documented ones."""

    def __init__(self, service_names: Iterable[str], documented: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self._documented = documented

    def _documented_response(self, response: Any) -> Any:
        files = response.file_descriptor_response.file_descriptor_proto
        for i, serialized in enumerate(files):
            name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
            if name in self._documented:
                files[i] = self._documented[name]
        return response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._documented_response(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        found = super()._file_containing_symbol(request, fully_qualified_name)
        return self._documented_response(found)

    def _file_containing_extension(
        self, request: Any, containing_type: str, extension_number: int
    ) -> Any:
        found = super()._file_containing_extension(request, containing_type, extension_number)
        return self._documented_response(found)


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    _register_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = DocumentedReflection(names, documented_files())
    handlers = {}
    for name in (reflection.SERVICE_NAME, V1_SERVICE):
        handlers[name] = {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        }
    for name, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, methods),))
        server.add_registered_method_handlers(name, methods)
