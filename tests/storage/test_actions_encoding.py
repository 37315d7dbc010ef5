"""Campaigns stored without their actions' encoding get it in the background, a batch at a
time, while writes go on; list pages then send the stored bytes."""

from __future__ import annotations

import dataclasses

from campaign_grpc.api.convert import CampaignWire, campaign_to_proto
from campaign_grpc.domain.types import EncodedCampaign, ListFilter
from campaign_grpc.ops.actions_encoding import ActionsEncoding
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer
from campaign_grpc_client.v1 import campaign_pb2 as pb
from e2e_helpers import eventually
from factories import big_actions, new_id, runnable_draft

WAIT = 10.0  # an upper bound for something that must happen; never reached when all is well


async def test_rows_of_an_older_release_are_encoded_while_writes_go_on(database_url: str) -> None:
    # As a release before the encoding wrote them: a store without the wire's form.
    plain = Store(open_database(database_url))
    plain.migrate()
    customer = new_id()
    ids = []
    with plain.db.atomic():
        for n in range(5):
            c = dataclasses.replace(
                runnable_draft(customer), id=new_id(), tm_create=n + 1, actions=big_actions()
            )
            c = dataclasses.replace(c, outdial_id="")
            plain.insert(c, "")
            ids.append(c.id)
    close_database(plain.db)

    wire = CampaignWire()
    db = open_database(database_url)
    store = Store(db, cache_bytes=1, page_bytes=4 * 1024 * 1024, wire=wire)
    store.migrate()
    writer = Writer(db, journal=store)
    encoding = ActionsEncoding(store, writer, batch=2)
    try:
        encoding.start()
        # A write of its own between the batches: renamed, with its own encoding.
        renamed = await writer.run(lambda: store.load(customer, ids[2]))
        assert renamed is not None
        renamed = dataclasses.replace(renamed, name="renamed", version=renamed.version + 1)
        await writer.run(lambda: store.save(dataclasses.replace(renamed, tm_update=99)))

        async def finished() -> bool:
            return encoding.done

        await eventually(finished, within=WAIT, every=0.01)
        assert store.actions_all_encoded()
        page, _ = store.list_page(ListFilter(customer), None, 10)
        assert [c.id for c in page] == ids[::-1]
        assert all(isinstance(c, EncodedCampaign) for c in page)
        for c in page:
            assert isinstance(c, EncodedCampaign)
            stored = store.load(customer, c.id)
            assert stored is not None
            assert pb.Campaign.FromString(c.data) == campaign_to_proto(stored)
        assert pb.Campaign.FromString(page[2].data).name == "renamed"  # type: ignore[union-attr]
    finally:
        await encoding.close()
        writer.close()
        close_database(db)
