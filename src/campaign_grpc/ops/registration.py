"""The campaign service's registration on a server, with the serializers of its own."""

from __future__ import annotations

from typing import Any, cast

import grpc

from campaign_grpc_client.v1 import campaign_pb2, campaign_pb2_grpc

from ..api import convert
from ..api.servicer import CampaignServicer

SERVICE = campaign_pb2.DESCRIPTOR.services_by_name["CampaignService"]
SERVICE_NAME = SERVICE.full_name
WATCH_METHOD = f"/{SERVICE_NAME}/WatchStatus"


def add_campaign_service(servicer: CampaignServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code does, but with WatchStatus serialized by
    convert.item_to_wire: a change sent to thousands of streams is encoded once, not once each;
    and ListCampaigns by convert.page_to_wire: a page is its campaigns' cached encodings."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    class Registration:
        # The generated function's two calls, caught to take its handlers as they are.
        def add_generic_rpc_handlers(self, generic: object) -> None:
            pass

        def add_registered_method_handlers(
            self, service: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
        ) -> None:
            handlers.update(method_handlers)

    campaign_pb2_grpc.add_CampaignServiceServicer_to_server(servicer, Registration())  # type: ignore[arg-type]
    watch = handlers["WatchStatus"]
    behaviour: Any = watch.unary_stream  # the stubs know only the sync handler types
    handlers["WatchStatus"] = grpc.unary_stream_rpc_method_handler(
        behaviour,
        request_deserializer=watch.request_deserializer,
        response_serializer=convert.item_to_wire,
    )
    listing = handlers["ListCampaigns"]
    handlers["ListCampaigns"] = grpc.unary_unary_rpc_method_handler(
        cast(Any, listing.unary_unary),
        request_deserializer=listing.request_deserializer,
        response_serializer=convert.page_to_wire,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
