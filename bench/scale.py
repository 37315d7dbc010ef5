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

from campaign_grpc.storage.connect import open_database
from campaign_grpc.storage.store import Store
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc as pb_grpc

ACTIONS = json.dumps(
    [
        {"id": str(uuid.uuid4()), "next_id": "", "type": "answer", "option": {}},
        {"id": str(uuid.uuid4()), "next_id": "", "type": "talk", "option": {"text": "hello"}},
    ],
    separators=(",", ":"),
)
CHUNK = 10_000


def preload(url: str, customer: str, count: int) -> float:
    """Inserts count campaigns directly into the tables; returns the seconds it took."""
    started = time.perf_counter()
    db = open_database(url, sqlite_synchronous="NORMAL")
    store = Store(db)
    store.migrate()
    table = store.t.campaign
    now = time.time_ns() // 1000
    columns = [
        "customer_id",
        "id",
        "type",
        "name",
        "detail",
        "status",
        "service_level",
        "end_handle",
        "actions",
        "outplan_id",
        "outdial_id",
        "queue_id",
        "next_campaign_id",
        "tm_create",
        "version",
        "revision",
        "finishing",
    ]
    # Peewee builds the statement once; the rows go through executemany in large chunks.
    sql, _ = table.insert({getattr(table, c): None for c in columns}).sql()
    with db.atomic():
        cursor = db.cursor()
        for first in range(0, count, CHUNK):
            cursor.executemany(
                sql,
                [
                    (
                        customer,
                        str(uuid.uuid4()),
                        1,
                        f"campaign {i}",
                        "",
                        1,
                        0,
                        1,
                        ACTIONS,
                        str(uuid.uuid4()),
                        str(uuid.uuid4()),
                        "",
                        "",
                        now + i,
                        1,
                        0,
                        False,
                    )
                    for i in range(first, min(count, first + CHUNK))
                ],
            )
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - started


def alternating_median_ms(
    first: Callable[[], Any], second: Callable[[], Any], repeat: int
) -> tuple[float, float]:
    """Median times of two calls made turn about, so that both see the same machine."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, into in ((first, times[0]), (second, times[1])):
            t = time.perf_counter()
            fn()
            into.append(time.perf_counter() - t)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def scale_run(
    count: int,
    server_args: list[str],
    server: Callable[[str, list[str]], AbstractContextManager[str]],
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
            first_ms, last_ms = alternating_median_ms(
                lambda: page(""), lambda: page(last_token), 500
            )
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
