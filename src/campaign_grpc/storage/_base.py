"""What every part of the store shares: the database, its tables, the caches and the wire's
form of campaigns (see store.py, which assembles the parts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee as pw

from ..domain.types import Campaign
from .connect import is_postgresql
from .identity import LogIdentity
from .pages import WireForm, estimated_size
from .prepared import Statements
from .rows import CAMPAIGN_COLUMNS, EVENT_COLUMNS
from .schema import Tables, bind_tables
from .versions import VersionCache


class StoreBase:
    def __init__(
        self, db: pw.Database, *, cache_bytes: int, page_bytes: int, wire: WireForm | None
    ) -> None:
        self.db = db
        self.page_bytes = page_bytes
        self._wire = wire
        self._encoded_size: Callable[[Campaign], int] = (
            estimated_size if wire is None else wire.size
        )
        self.cache: VersionCache[Campaign] = VersionCache(cache_bytes)
        self.t: Tables = bind_tables(db)
        self._q = Statements(db)
        self._postgresql = is_postgresql(db)
        self.identity = LogIdentity()
        C, E = self.t.campaign, self.t.event
        self._campaign_fields: list[Any] = [getattr(C, name) for name in CAMPAIGN_COLUMNS]
        self._event_fields: list[Any] = [getattr(E, name) for name in EVENT_COLUMNS]
