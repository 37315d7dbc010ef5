"""Server reflection under both grpc.reflection.v1 and v1alpha, with the contract's comments.

grpcio-reflection serves only v1alpha. The v1 protocol is the same messages under another
package, so one servicer answers both, and a renamed copy of its descriptor makes the v1
service describable too.

The descriptors the generated code registers carry no comments, so `grpcurl describe` would
show none of the contract's documentation: our own files are served from the descriptor set
that `make proto` writes with their source info beside this module instead. The servicer is
our own, on grpcio-reflection's messages and the descriptor pool's public lookups: its own
servicer serves only what a descriptor copies out, which leaves the comments behind, and
swapping them in would mean overriding its private methods.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha.reflection_pb2 import (
    ServerReflectionRequest,
    ServerReflectionResponse,
)

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


def _not_found(request: ServerReflectionRequest) -> ServerReflectionResponse:
    code, message = grpc.StatusCode.NOT_FOUND.value
    return ServerReflectionResponse(
        error_response=reflection_pb2.ErrorResponse(error_code=code, error_message=message),
        original_request=request,
    )


def _with_imports(file: FileDescriptor, seen: dict[str, FileDescriptor]) -> list[FileDescriptor]:
    """The file, then the files it imports, directly or not, each once, depth first (the
    order grpcio-reflection's servicer lists them in)."""
    seen[file.name] = file
    for imported in file.dependencies:
        if imported.name not in seen:
            _with_imports(imported, seen)
    return list(seen.values())


class DocumentedReflection:
    """The reflection protocol over a descriptor pool, answered as grpcio-reflection's
    servicer answers it, but with our files' descriptors served from the documented ones."""

    def __init__(
        self,
        service_names: Iterable[str],
        documented: Mapping[str, bytes],
        pool: descriptor_pool.DescriptorPool | None = None,
    ) -> None:
        self._service_names = tuple(sorted(service_names))
        # Each file's bytes, made once: our own files as documented, the others as the pool
        # has them (a file in a pool never changes).
        self._serialized_files = dict(documented)
        self._pool = descriptor_pool.Default() if pool is None else pool

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[ServerReflectionRequest], context: Any
    ) -> AsyncIterator[ServerReflectionResponse]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: ServerReflectionRequest) -> ServerReflectionResponse:
        asked = request.WhichOneof("message_request")
        try:
            if asked == "file_by_filename":
                return self._files(request, self._pool.FindFileByName(request.file_by_filename))
            if asked == "file_containing_symbol":
                symbol = request.file_containing_symbol
                return self._files(request, self._pool.FindFileContainingSymbol(symbol))
            if asked == "file_containing_extension":
                return self._files(request, self._extension_file(request))
            if asked == "all_extension_numbers_of_type":
                return self._extension_numbers(request)
        except KeyError:
            return _not_found(request)
        if asked == "list_services":
            services = [reflection_pb2.ServiceResponse(name=n) for n in self._service_names]
            return ServerReflectionResponse(
                list_services_response=reflection_pb2.ListServiceResponse(service=services),
                original_request=request,
            )
        code, message = grpc.StatusCode.INVALID_ARGUMENT.value
        return ServerReflectionResponse(
            error_response=reflection_pb2.ErrorResponse(error_code=code, error_message=message),
            original_request=request,
        )

    def _serialized(self, file: FileDescriptor) -> bytes:
        serialized = self._serialized_files.get(file.name)
        if serialized is None:
            proto = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(proto)
            serialized = self._serialized_files[file.name] = proto.SerializeToString()
        return serialized

    def _files(
        self, request: ServerReflectionRequest, file: FileDescriptor
    ) -> ServerReflectionResponse:
        files = [self._serialized(f) for f in _with_imports(file, {})]
        return ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=files
            ),
            original_request=request,
        )

    def _extension_file(self, request: ServerReflectionRequest) -> FileDescriptor:
        asked = request.file_containing_extension
        message = self._pool.FindMessageTypeByName(asked.containing_type)
        extension = self._pool.FindExtensionByNumber(message, asked.extension_number)
        return self._pool.FindFileContainingSymbol(extension.full_name)

    def _extension_numbers(self, request: ServerReflectionRequest) -> ServerReflectionResponse:
        message = self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
        numbers = sorted(e.number for e in self._pool.FindAllExtensions(message))
        return ServerReflectionResponse(
            all_extension_numbers_response=reflection_pb2.ExtensionNumberResponse(
                base_type_name=message.full_name, extension_number=numbers
            ),
            original_request=request,
        )


def servicer(service_names: Iterable[str]) -> DocumentedReflection:
    """The servicer of both protocols, listing them besides the services named."""
    _register_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    return DocumentedReflection(names, documented_files())


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    documented = servicer(service_names)
    handlers = {}
    for name in (reflection.SERVICE_NAME, V1_SERVICE):
        handlers[name] = {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                documented.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        }
    for name, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, methods),))
        server.add_registered_method_handlers(name, methods)
