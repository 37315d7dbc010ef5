"""The scale run: a customer with many campaigns, loaded in bulk, then listed end to end.

Reports the cost of the first page, of a page at the end of a full walk, and the database
size per campaign.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc

from campaign.v1 import campaign_pb2 as pb
from campaign.v1 import campaign_pb2_grpc as pb_grpc
from campaign_grpc.database import open_database
from campaign_grpc.store import Store

ACTIONS = json.dumps(
    [
        {"id": str(uuid.uuid4()), "next_id": "", "type": "answer", "option": {}},
        {"id": str(uuid.uuid4()), "next_id": "", "type": "talk", "option": {"text": "hello"}},
    ],
    separators=(",", ":"),
)
CHUNK = 1000


def preload(url: str, customer: str, count: int) -> float:
    """Inserts count campaigns directly into the tables; returns the seconds it took."""
    started = time.perf_counter()
    db = open_database(url, sqlite_synchronous="NORMAL")
    store = Store(db)
    store.migrate()
    table = store.t.campaign
    now = time.time_ns() // 1000
    with db.atomic():
        for first in range(0, count, CHUNK):
            rows = [
                {
                    "customer_id": customer, "id": str(uuid.uuid4()), "type": 1,
                    "name": f"campaign {i}", "detail": "", "status": 1, "service_level": 0,
                    "end_handle": 1, "actions": ACTIONS, "outplan_id": str(uuid.uuid4()),
                    "outdial_id": str(uuid.uuid4()), "queue_id": "", "next_campaign_id": "",
                    "tm_create": now + i, "tm_update": None, "tm_delete": None, "version": 1,
                    "revision": 0, "stop_deadline": None, "request_id": None,
                }
                for i in range(first, min(count, first + CHUNK))
            ]
            table.insert_many(rows).execute()
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - started


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def scale_run(
    count: int, server_args: list[str], server: Callable[[str, list[str]], AbstractContextManager[str]]
) -> dict:
    customer = str(uuid.uuid4())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scale.db"
        url = f"sqlite:///{path}"
        print(f"scale: loading {count:,} campaigns ...", flush=True)
        load_s = preload(url, customer, count)
        size = path.stat().st_size
        with server(url, server_args) as target, grpc.insecure_channel(target) as channel:
            stub = pb_grpc.CampaignServiceStub(channel)

            def page(token: str, size: int = 50) -> pb.ListCampaignsResponse:
                return stub.ListCampaigns(
                    pb.ListCampaignsRequest(customer_id=customer, page_size=size, page_token=token)
                )

            first_ms = median_ms(lambda: page(""), 200)
            walk_started = time.perf_counter()
            token, seen, pages, last_token = "", 0, 0, ""
            while True:
                r = page(token, 1000)
                seen += len(r.campaigns)
                pages += 1
                if not r.next_page_token:
                    break
                last_token, token = token, r.next_page_token
            walk_s = time.perf_counter() - walk_started
            last_ms = median_ms(lambda: page(last_token), 200)
    result = {
        "campaigns": count,
        "preload_s": load_s,
        "walk_pages_of_1000": pages,
        "walk_seen": seen,
        "walk_s": walk_s,
        "first_page_ms": first_ms,
        "last_page_ms": last_ms,
        "last_over_first": last_ms / first_ms,
        "bytes_per_campaign": size / count,
    }
    print(
        f"scale: {count:,} campaigns (loaded in {load_s:.0f} s), walked {seen:,} in {pages} pages "
        f"of 1000 in {walk_s:.1f} s\n"
        f"  first page of 50: {first_ms:.2f} ms, a page of 50 at the end of the walk: "
        f"{last_ms:.2f} ms, ratio {last_ms / first_ms:.2f} (target <= 1.2)\n"
        f"  database size: {size / count:.0f} bytes per campaign"
    )
    return result
