"""Valid requests and drafts to start tests from."""

from __future__ import annotations

import uuid
from typing import Any

from campaign_grpc.domain.types import Action, Campaign, CampaignType
from campaign_grpc_client.v1 import campaign_pb2 as pb


def new_id() -> str:
    return str(uuid.uuid4())


def runnable_draft(customer_id: str, **changes: Any) -> Campaign:
    """A domain draft that meets every run condition."""
    fields: dict[str, Any] = {
        "id": "",
        "customer_id": customer_id,
        "type": CampaignType.CALL,
        "name": "spring promo",
        "outplan_id": new_id(),
        "outdial_id": new_id(),
        "actions": [Action("", "", "answer", {}), Action("", "", "talk", {"text": "hello"})],
    }
    fields.update(changes)
    return Campaign(**fields)


def runnable_campaign(customer_id: str, **changes: Any) -> pb.Campaign:
    """A campaign.v1 message that meets every run condition."""
    m = pb.Campaign(
        customer_id=customer_id,
        type=pb.Campaign.TYPE_CALL,
        name="spring promo",
        outplan_id=new_id(),
        outdial_id=new_id(),
        actions=[pb.Action(type="answer"), pb.Action(type="talk")],
    )
    m.actions[1].option.update({"text": "hello"})
    for key, value in changes.items():
        if isinstance(value, list):
            del getattr(m, key)[:]
            getattr(m, key).extend(value)
        else:
            setattr(m, key, value)
    return m


def big_actions(count: int = 1000) -> list[Action]:
    """The sizing of a large campaign in docs/operating/limits.md: 1,000 actions with options of
    about 170 bytes of JSON each, some 225 KB encoded."""
    return [
        Action(
            new_id(),
            "",
            "talk",
            {
                "text": f"Hello, this is a reminder of your appointment number {n:04d} for "
                "tomorrow at ten sharp.",
                "language": "en-US",
                "gender": "female",
                "digits_terminator": "#",
                "timeout": 5000,
            },
        )
        for n in range(count)
    ]


def big_campaign(customer_id: str, count: int = 1000) -> pb.Campaign:
    """big_actions as a campaign.v1 message that meets every run condition."""
    m = runnable_campaign(customer_id, actions=[])
    for action in big_actions(count):
        added = m.actions.add(type=action.type)
        added.option.update(action.option)
    return m
