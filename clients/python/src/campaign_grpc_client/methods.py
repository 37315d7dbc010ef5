"""Each method of campaign.v1.CampaignService with its traits, as the contract states them.

The traits are read from the generated descriptors' options: a read is a method whose
idempotency_level is NO_SIDE_EFFECTS, or whose (campaign.v1.traits) say read (a level
released otherwise cannot be raised without breaking the contract); retry safety comes
from (campaign.v1.traits). Admission, the audit log and the client's retries all take
their view of a method from here, so a method is described once, in the .proto.

The Python client ships this module too: it imports nothing but the generated code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from google.protobuf.message import Message

from .v1 import campaign_pb2, options_pb2

SERVICE = campaign_pb2.DESCRIPTOR.services_by_name["CampaignService"]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    # As gRPC names a call: "/campaign.v1.CampaignService/GetCampaign".
    path: str
    # Streams requests or responses: never admitted as a unary call.
    streaming: bool
    read: bool
    # Safe to repeat after an unknown outcome, whatever the request (every read is).
    retry_safe: bool
    # A dotted path into the request; when that field is set, safe to repeat.
    retry_safe_when_set: str

    @property
    def write(self) -> bool:
        return not self.read

    def safe_to_retry(self, request: Message) -> bool:
        if self.retry_safe:
            return True
        return bool(self.retry_safe_when_set) and is_set(request, self.retry_safe_when_set)


def is_set(message: Message, path: str) -> bool:
    *outer, last = path.split(".")
    for name in outer:
        message = getattr(message, name)
    field = message.DESCRIPTOR.fields_by_name[last]
    if field.has_presence:
        return message.HasField(last)
    return bool(getattr(message, last))


def check_path(request_type: Descriptor, path: str) -> None:
    """A path that names no field would make a method silently never retried: refused at
    import, so that a mistake in the .proto fails every test."""
    descriptor: Descriptor | None = request_type
    for name in path.split("."):
        field = None if descriptor is None else descriptor.fields_by_name.get(name)
        if field is None:
            raise ValueError(f"{request_type.full_name} has no field {path!r}")
        descriptor = field.message_type


def method_of(service: ServiceDescriptor, method: MethodDescriptor) -> Method:
    options = method.GetOptions()
    traits = options.Extensions[options_pb2.traits]
    read = options.idempotency_level == MethodOptions.NO_SIDE_EFFECTS or traits.read
    if traits.retry_safe_when_set:
        check_path(method.input_type, traits.retry_safe_when_set)
    return Method(
        name=method.name,
        path=f"/{service.full_name}/{method.name}",
        streaming=method.client_streaming or method.server_streaming,
        read=read,
        retry_safe=read or traits.retry_safe,
        retry_safe_when_set=traits.retry_safe_when_set,
    )


def methods_of(service: ServiceDescriptor) -> dict[str, Method]:
    return {m.name: method_of(service, m) for m in service.methods}


METHODS: Mapping[str, Method] = methods_of(SERVICE)
READS = frozenset(m.path for m in METHODS.values() if m.read)
WRITES = frozenset(m.path for m in METHODS.values() if m.write)


def safe_to_retry(method: str, request: Message) -> bool:
    """Whether request, sent to the method of that name, may be sent again when its outcome
    is unknown: it may have been carried out, so a repetition must change nothing more."""
    return METHODS[method].safe_to_retry(request)
