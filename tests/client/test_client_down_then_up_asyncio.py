"""A call made while the server is down: retried until it is up, then the client works."""

from __future__ import annotations

import pytest

from campaign_grpc.settings import Settings
from campaign_grpc_client import AsyncCampaignClient, Retry, exceptions
from campaign_grpc_client.v1 import campaign_pb2 as pb
from client_twins import AsyncBeside, AsyncErrors, AsyncServing
from e2e_helpers import free_port
from factories import new_id, runnable_campaign

# Each test serves on a real socket.
pytestmark = pytest.mark.e2e

C = pb.Campaign


async def test_a_call_made_while_the_server_is_down_succeeds_once_it_is_up(
    settings: Settings, customer: str
) -> None:
    port = free_port()
    errors = AsyncErrors()
    retry = Retry(maximum=0.3, on_error=errors.report)
    async with AsyncCampaignClient(f"127.0.0.1:{port}", retry=retry) as client:
        creating = AsyncBeside(client.create_campaign, runnable_campaign(customer))
        _, first = await errors.next(10)  # the first attempt failed
        async with AsyncServing(settings, listen=f"127.0.0.1:{port}"):
            created = await creating.result(15)
            assert created.customer_id == customer
            assert all(isinstance(e, exceptions.Unavailable) for e in [first, *errors.rest()])

            assert await client.get_campaign(customer, created.id) == created
            assert [c.id async for c in client.iter_campaigns(customer)] == [created.id]
            running = await client.update_campaign_status(customer, created.id, C.STATUS_RUN)
            assert running.status == C.STATUS_RUN
            with pytest.raises(exceptions.NotFound) as raised:
                await client.get_campaign(customer, new_id())
            assert raised.value.reason == "CAMPAIGN_NOT_FOUND"
