"""Malformed protobuf on the wire, to every method of campaign.v1.CampaignService.

Each request is raw bytes sent through a generic call with no serializer. Every answer must be
a normal domain answer (a message, or an error with a google.rpc.Status and an ErrorInfo), or
INTERNAL from gRPC's own failure to parse the request, and only for bytes that do not parse;
never a hang; a rejected request changes nothing stored; and afterwards the server still serves.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaign_grpc.settings import Settings
from campaign_grpc_client.v1 import campaign_pb2 as pb
from e2e_helpers import details_of, stored_rows
from factories import new_id, runnable_campaign

Code = grpc.StatusCode
SERVICE = pb.DESCRIPTOR.services_by_name["CampaignService"]
SEED = 20261127
CASES_PER_METHOD = 150
# Every request the test sends: CASES_PER_METHOD for each of the service's methods.
REQUESTS_FUZZED = CASES_PER_METHOD * len(SERVICE.methods)
DEADLINE_S = 5.0
# The codes the service answers a well-formed request with, each with a google.rpc.Status.
DOMAIN_CODES = {
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
    Code.ABORTED,
    Code.OUT_OF_RANGE,
}

# What may answer bytes that do not parse: INTERNAL is what the issue allows; UNKNOWN is
# what grpc.aio sends today (see test_unparseable_bytes_are_not_answered_unknown).
PARSE_FAILURE_CODES = {Code.INVALID_ARGUMENT}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def nested_struct(depth: int) -> bytes:
    """A CreateCampaignRequest whose first action's option nests depth Structs: each level is
    Struct.fields (a map entry) -> Value.struct_value -> Struct."""
    struct = b""
    for _ in range(depth):
        value = length_delimited(5, struct)  # Value.struct_value
        entry = length_delimited(1, b"k") + length_delimited(2, value)
        struct = length_delimited(1, entry)  # Struct.fields
    action = length_delimited(3, b"answer") + length_delimited(4, struct)
    campaign = length_delimited(2, new_id().encode()) + tag(3, 0) + varint(1)
    campaign += length_delimited(9, action)
    return length_delimited(1, campaign)


def valid_request(method: Any, customer: str, campaign_id: str) -> bytes:
    """A well-formed request for method, about a stored campaign: mutations of it reach
    further into the service than random bytes do."""
    m: message.Message
    match method.name:
        case "CreateCampaign":
            m = pb.CreateCampaignRequest(campaign=runnable_campaign(customer))
        case "UpdateCampaign":
            m = pb.UpdateCampaignRequest(
                campaign=pb.Campaign(customer_id=customer, id=campaign_id, name="x")
            )
            m.update_mask.paths.append("name")
        case "ListCampaigns":
            m = pb.ListCampaignsRequest(customer_id=customer, page_size=2)
        case "WatchStatus":
            m = pb.WatchStatusRequest(customer_id=customer, campaign_id=campaign_id)
        case "UpdateCampaignStatus":
            m = pb.UpdateCampaignStatusRequest(
                customer_id=customer, id=campaign_id, status=pb.Campaign.STATUS_RUN
            )
        case "ListCampaignEvents":
            m = pb.ListCampaignEventsRequest(customer_id=customer, campaign_id=campaign_id)
        case "HoldLeases":
            m = pb.HoldLeasesRequest(
                join=pb.HoldLeasesRequest.Join(holder="fuzz", customer_id=customer, capacity=1)
            )
        case _:
            request_class = getattr(pb, method.input_type.name)
            m = request_class(customer_id=customer, id=campaign_id)
    return m.SerializeToString()


BAD_UTF8 = (b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"ok\x80", b"\xf4\x90\x80\x80")


def malformed(rng: random.Random, valid: bytes, fields: list[int]) -> Iterator[bytes]:
    """CASES_PER_METHOD malformed (or merely odd) encodings of a request."""
    fixed = [
        b"",
        b"\x08",  # a tag and no value
        b"\x08\xff",  # a varint cut short
        b"\x08" + b"\xff" * 10 + b"\x01",  # a varint of eleven bytes
        b"\x00\x01",  # field number 0
        tag(536870911, 0) + b"\x01",  # the largest field number, unknown
        b"\x0b" * 200 + b"\x0c" * 200,  # groups nested 200 deep
        b"\x0b\x14",  # a group closed by another field's end
        b"\x0c",  # a group end with no start
        tag(1, 6) + b"\x00",  # wire type 6 does not exist
        tag(1, 7) + b"\x00",  # nor 7
        tag(1, 2) + varint(2**31) + b"abc",  # a length past the end
        tag(1, 2) + varint(2**62) + b"abc",
        tag(1, 2) + varint(2**64 - 1) + b"abc",  # a length of -1
        tag(1, 5) + b"\x00\x00",  # a fixed32 cut short
        tag(1, 1) + b"\x00" * 4,  # a fixed64 cut short
        nested_struct(20),
        nested_struct(40),
        nested_struct(200),  # past protobuf's limit on nesting
        valid + valid,  # every field twice: the last one wins
        valid[: len(valid) // 2],
    ]
    yield from fixed
    for _ in range(CASES_PER_METHOD - len(fixed)):
        field = rng.choice(fields)
        match rng.randrange(8):
            case 0:
                yield rng.randbytes(rng.randrange(1, 64))
            case 1:
                yield valid[: rng.randrange(len(valid) + 1)]
            case 2:
                flipped = bytearray(valid or b"\x00")
                for _ in range(rng.randrange(1, 4)):
                    flipped[rng.randrange(len(flipped))] = rng.randrange(256)
                yield bytes(flipped)
            case 3:
                # A field with each wrong wire type and some payload.
                yield valid + tag(field, rng.choice((0, 1, 2, 5))) + rng.randbytes(8)
            case 4:
                yield valid + length_delimited(field, rng.choice(BAD_UTF8))
            case 5:
                yield valid + tag(field, 2) + varint(rng.choice((2**31 - 1, 2**40, 2**63)))
            case 6:
                # A submessage field whose contents are garbage.
                yield length_delimited(field, rng.randbytes(rng.randrange(1, 32))) + valid
            case _:
                yield valid + tag(field, 0) + varint(rng.choice((2**63, 2**64 - 1, 2**31)))


def parses(request_class: Any, raw: bytes) -> bool:
    try:
        request_class.FromString(raw)
    except message.DecodeError:
        return False
    return True


async def answer(channel: grpc.aio.Channel, method: Any, raw: bytes) -> grpc.aio.AioRpcError | None:
    """Sends raw as a request of method; the error it was answered with, or None for OK."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.client_streaming:
            call = channel.stream_stream(path)(iter([raw]), timeout=DEADLINE_S)
            try:
                await call.read()
            finally:
                call.cancel()
        elif method.server_streaming:
            call = channel.unary_stream(path)(raw, timeout=DEADLINE_S)
            try:
                # The first message (or the end) is an answer; a watch then streams on.
                await call.read()
            finally:
                call.cancel()
        else:
            await channel.unary_unary(path)(raw, timeout=DEADLINE_S)
    except grpc.aio.AioRpcError as err:
        return err
    return None


async def test_malformed_requests_get_clean_answers_and_the_server_keeps_serving(
    start_server: Any, tmp_path: Path
) -> None:
    db_path = tmp_path / "fuzz.db"
    app = await start_server(
        Settings(
            listen="127.0.0.1:0",
            database_url=f"sqlite:///{db_path}",
            heartbeat_interval=0.2,
            shutdown_grace=1,
        )
    )
    rng = random.Random(SEED)
    customer = new_id()
    sent = 0
    # How many requests the service itself answered, and how many gRPC could not parse:
    # a fuzz that never gets past the parser, or never fails it, tests little.
    answered_by_service = unparsed = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        create = channel.unary_unary(
            f"/{SERVICE.full_name}/CreateCampaign",
            request_serializer=pb.CreateCampaignRequest.SerializeToString,
            response_deserializer=pb.CreateCampaignResponse.FromString,
        )
        created = await create(
            pb.CreateCampaignRequest(campaign=runnable_campaign(customer)), timeout=10
        )
        for method in SERVICE.methods:
            request_class = getattr(pb, method.input_type.name)
            fields = [f.number for f in method.input_type.fields]
            valid = valid_request(method, customer, created.campaign.id)
            for raw in malformed(rng, valid, fields):
                before = stored_rows(db_path)
                err = await answer(channel, method, raw)
                sent += 1
                if err is None:
                    answered_by_service += 1
                    continue
                where = f"{method.name} {raw[:60]!r}"
                assert err.code() != Code.DEADLINE_EXCEEDED, f"no answer in time: {where}"
                if not parses(request_class, raw):
                    # Bytes that do not parse are the client's mistake, with details.
                    assert err.code() in PARSE_FAILURE_CODES, f"{err.code()}: {where}"
                    assert details_of(err).info.reason == "MALFORMED_REQUEST", where
                    unparsed += 1
                    continue
                assert err.code() in DOMAIN_CODES, f"{err.code()} {err.details()}: {where}"
                details_of(err)
                assert stored_rows(db_path) == before, f"rejected, but data changed: {where}"
                answered_by_service += 1

        # Still serving: health, and a valid call.
        health = health_pb2_grpc.HealthStub(channel)
        checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
        again = await create(
            pb.CreateCampaignRequest(campaign=runnable_campaign(customer)), timeout=10
        )
        assert again.campaign.customer_id == customer
    assert sent == REQUESTS_FUZZED
    assert answered_by_service >= REQUESTS_FUZZED // 10, answered_by_service
    assert unparsed >= REQUESTS_FUZZED // 10, unparsed


async def test_unparseable_bytes_are_invalid_argument_with_details(
    start_server: Any, tmp_path: Path
) -> None:
    app = await start_server(
        Settings(listen="127.0.0.1:0", database_url=f"sqlite:///{tmp_path / 'fuzz.db'}")
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        for method in SERVICE.methods:
            request_class = getattr(pb, method.input_type.name)
            for raw in (b"\x08\xff", b"\x0a\x05ab", tag(1, 7) + b"\x00"):
                assert not parses(request_class, raw)
                err = await answer(channel, method, raw)
                assert err is not None
                assert err.code() == Code.INVALID_ARGUMENT, (
                    f"{method.name}: {err.code()} {err.details()}"
                )
                assert details_of(err).info.reason == "MALFORMED_REQUEST"
