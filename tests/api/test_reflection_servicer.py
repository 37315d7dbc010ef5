"""The reflection servicer answers every kind of request as grpcio-reflection's own servicer
does, but for the contract's comments, which it adds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.reflection_pb2 import (
    ExtensionRequest,
    ServerReflectionRequest,
    ServerReflectionResponse,
)

from campaign_grpc.api import reflection as documented_reflection
from campaign_grpc_client.v1 import campaign_pb2, options_pb2

SERVICE = campaign_pb2.DESCRIPTOR.services_by_name["CampaignService"].full_name
OPTIONS = "google.protobuf.MethodOptions"  # what the traits option extends

REQUESTS = [
    ServerReflectionRequest(list_services=""),
    ServerReflectionRequest(file_by_filename="campaign/v1/campaign.proto"),
    ServerReflectionRequest(file_by_filename="campaign/v1/options.proto"),
    ServerReflectionRequest(file_by_filename="google/protobuf/timestamp.proto"),
    ServerReflectionRequest(file_by_filename="campaign/v1/nope.proto"),
    ServerReflectionRequest(file_containing_symbol=SERVICE),
    ServerReflectionRequest(file_containing_symbol="campaign.v1.Campaign.tm_create"),
    ServerReflectionRequest(file_containing_symbol=health.SERVICE_NAME),
    ServerReflectionRequest(file_containing_symbol=documented_reflection.V1_SERVICE),
    ServerReflectionRequest(file_containing_symbol=reflection.SERVICE_NAME),
    ServerReflectionRequest(file_containing_symbol="campaign.v1.Nope"),
    ServerReflectionRequest(
        file_containing_extension=ExtensionRequest(
            containing_type=OPTIONS, extension_number=options_pb2.traits.number
        )
    ),
    ServerReflectionRequest(
        file_containing_extension=ExtensionRequest(containing_type=OPTIONS, extension_number=9)
    ),
    ServerReflectionRequest(
        file_containing_extension=ExtensionRequest(
            containing_type="campaign.v1.Nope", extension_number=1
        )
    ),
    ServerReflectionRequest(all_extension_numbers_of_type=OPTIONS),
    ServerReflectionRequest(all_extension_numbers_of_type="campaign.v1.Nope"),
    ServerReflectionRequest(host="only a host"),
]


async def answers(servicer: Any) -> list[ServerReflectionResponse]:
    async def requests() -> AsyncIterator[ServerReflectionRequest]:
        for request in REQUESTS:
            yield request

    return [answer async for answer in servicer.ServerReflectionInfo(requests(), None)]


def files(answer: ServerReflectionResponse) -> list[descriptor_pb2.FileDescriptorProto]:
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]


def without_files(answer: ServerReflectionResponse) -> ServerReflectionResponse:
    rest = ServerReflectionResponse()
    rest.CopyFrom(answer)
    rest.file_descriptor_response.ClearField("file_descriptor_proto")
    return rest


def as_generated(file: descriptor_pb2.FileDescriptorProto) -> None:
    """protoc's descriptor also names each field's JSON name, which the runtime's copy leaves
    out, and carries the source info."""
    file.ClearField("source_code_info")
    messages = list(file.message_type)
    fields = list(file.extension)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        fields.extend([*message.field, *message.extension])
    for field in fields:
        field.ClearField("json_name")


def comments(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    return [loc.leading_comments for loc in file.source_code_info.location if loc.leading_comments]


async def test_it_answers_as_grpcio_reflection_does_with_the_contracts_comments() -> None:
    names = [SERVICE, health.SERVICE_NAME]
    ours = await answers(documented_reflection.servicer(names))
    theirs = await answers(
        reflection.aio.ReflectionServicer(
            [*names, reflection.SERVICE_NAME, documented_reflection.V1_SERVICE]
        )
    )

    assert len(ours) == len(theirs) == len(REQUESTS)
    documented = documented_reflection.documented_files()
    assert set(documented) == {"campaign/v1/campaign.proto", "campaign/v1/options.proto"}
    served_documented = set()
    for our, their in zip(ours, theirs, strict=True):
        assert without_files(our) == without_files(their)
        our_files, their_files = files(our), files(their)
        assert [f.name for f in our_files] == [f.name for f in their_files]
        for our_file, their_file in zip(our_files, their_files, strict=True):
            if our_file.name in documented:
                served_documented.add(our_file.name)
                assert our_file.SerializeToString() == documented[our_file.name]
                assert comments(our_file), our_file.name
                as_generated(our_file)
            assert our_file == their_file
    assert served_documented == set(documented)
    kinds = [answer.WhichOneof("message_response") for answer in ours]
    assert set(kinds) == {
        "list_services_response",
        "file_descriptor_response",
        "all_extension_numbers_response",
        "error_response",
    }
