"""Background re-encoding: the rows an older release wrote without their actions' encoding
given one, a batch at a time, until meta says none is left."""

from __future__ import annotations

from .rows import actions_from_json
from .transaction import Transaction

# Set in meta once every row that an older release wrote has its actions' encoding.
ACTIONS_ENCODED = "actions_encoded"


class Reencoding(Transaction):
    def actions_all_encoded(self) -> bool:
        """Every row has its actions' encoding, or a store without the wire's form cannot
        give them one (see encode_stored_actions)."""
        M = self.t.meta
        return self._wire is None or M.get_or_none(M.key == ACTIONS_ENCODED) is not None

    def encode_stored_actions(self, after_seq: int, batch: int) -> int | None:
        """Gives up to batch rows past after_seq that were written without the actions'
        encoding (by a release before schema version 5) theirs; returns the seq to go on
        after, or None once there are no more (and says so in meta, for good). A row that
        another release writes later without it stays readable: its pages decode it."""
        assert self._wire is not None, "a store without the wire's form encodes nothing"
        C, M = self.t.campaign, self.t.meta
        stale = C.actions_wire_body.is_null() | (C.actions_wire_body != C.body_revision)
        rows = list(
            C.select(C.seq, C.version, C.body_revision, C.actions)
            .where(stale & (C.seq > after_seq))
            .order_by(C.seq)
            .limit(batch)
            .tuples()
        )
        for seq, version, body_revision, text in rows:
            data = self._wire.actions(actions_from_json(text))
            # Unless a write of another version came first, with its own encoding.
            self._write_query(
                C.update(actions_wire=data, actions_wire_body=body_revision).where(
                    (C.seq == seq) & (C.version == version)
                )
            )
        if len(rows) < batch:
            self._write_query(M.insert(key=ACTIONS_ENCODED, value=1).on_conflict_ignore())
            return None
        return int(rows[-1][0])
