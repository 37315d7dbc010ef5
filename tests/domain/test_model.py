"""Random sequences of operations on a few campaigns of two customers, checked after every step
against a model of the rules that fits on a page (hypothesis RuleBasedStateMachine).

The domain runs on a real temporary SQLite file. Campaign ids come from a small pool that both
customers draw from: an id is one key across customers, so one that a customer holds is
refused to the other, and nothing done to one campaign may show in another. Chains
(next_campaign_id) are left to their own tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from campaign_grpc.domain.campaigns import Campaigns
from campaign_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    CampaignError,
    FailedPrecondition,
    NotFound,
)
from campaign_grpc.domain.types import (
    Action,
    Campaign,
    CampaignType,
    EndHandle,
    ListFilter,
    Reason,
    Status,
)
from campaign_grpc.storage.connect import close_database, open_database
from campaign_grpc.storage.read_lanes import Readers
from campaign_grpc.storage.store import Store
from campaign_grpc.storage.writer import Writer

T = TypeVar("T")

CUSTOMERS = ("c0000000-0000-4000-8000-000000000001", "c0000000-0000-4000-8000-000000000002")
IDS = (
    "a0000000-0000-4000-8000-000000000001",
    "a0000000-0000-4000-8000-000000000002",
    "a0000000-0000-4000-8000-000000000003",
    "a0000000-0000-4000-8000-000000000004",
)
OUTDIALS = ("d0000000-0000-4000-8000-000000000001", "d0000000-0000-4000-8000-000000000002")
OUTPLAN = "e0000000-0000-4000-8000-000000000001"
QUEUE = "f0000000-0000-4000-8000-000000000001"
REQUEST_IDS = ("b0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002")
# An action with an id of its own: a campaign given the same actions again is unchanged.
ACTION = Action("0a000000-0000-4000-8000-000000000001", "", "answer", {})
GRACE_S = 60

customers = st.sampled_from(CUSTOMERS)
ids = st.sampled_from(IDS)
# The simplest values first: what hypothesis starts from is a campaign that can run.
outdials = st.sampled_from((*OUTDIALS, ""))
outplans = st.sampled_from((OUTPLAN, ""))
queues = st.sampled_from(("", QUEUE))
action_lists = st.sampled_from(((ACTION,), ()))
names = st.sampled_from(("", "spring", "autumn"))
end_handles = st.sampled_from((EndHandle.STOP, EndHandle.CONTINUE))
KEYS = tuple((c, i) for c in CUSTOMERS for i in IDS)
# Who holds each id from the start: two ids each.
OWN_KEYS = tuple((CUSTOMERS[n // 2], i) for n, i in enumerate(IDS))
keys = st.sampled_from(KEYS)


@dataclasses.dataclass
class Model:
    """What the rules say one campaign is."""

    name: str
    outplan_id: str
    outdial_id: str
    queue_id: str
    actions: tuple[Action, ...]
    end_handle: EndHandle
    status: Status = Status.STOP
    deleted: bool = False
    finishing: bool = False
    # The reason of the last event about the campaign: a repeated report is news only once.
    last_reason: Reason = Reason.CREATED
    # The stop a ConfirmDrained must name (0: none), and the stops that are over.
    stop_revision: int = 0
    past_stops: set[int] = dataclasses.field(default_factory=set)

    def run_unmet(self) -> set[str]:
        unmet = set()
        if self.deleted:
            unmet.add("CAMPAIGN_DELETED")
        if not self.outplan_id:
            unmet.add("OUTPLAN_MISSING")
        if not self.outdial_id:
            unmet.add("OUTDIAL_MISSING")
        if not self.actions and not self.queue_id:
            unmet.add("NOTHING_TO_RUN")
        return unmet


Key = tuple[str, str]
# One expected event: campaign key, status, previous status, deleted, reason.
Expected = tuple[Key, Status, Status, bool, Reason]


class CampaignRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._dir = Path(tempfile.mkdtemp(prefix="campaign-model-"))
        self._loop = asyncio.new_event_loop()
        self._db = open_database(f"sqlite:///{self._dir / 'model.db'}")
        store = Store(self._db)
        store.migrate()
        self._writer = Writer(self._db, journal=store)
        self._readers = Readers(self._db, 1)
        self.now = 1_800_000_000_000_000
        self.domain = Campaigns(
            store, self._writer, self._readers, stop_grace_s=GRACE_S, clock=lambda: self.now
        )
        self.model: dict[Key, Model] = {}
        self.etags: dict[Key, str] = {}
        self.seen_etags: dict[Key, set[str]] = {}
        self.requests: dict[tuple[str, str], Key] = {}
        self.revision = 0
        self.expected: list[Expected] = []

    def teardown(self) -> None:
        self._writer.close()
        self._readers.close()
        close_database(self._db)
        self._loop.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def attempt(self, coro: Coroutine[Any, Any, Campaign]) -> Campaign | CampaignError:
        try:
            return self.run(coro)
        except CampaignError as exc:
            return exc

    # -- bookkeeping -----------------------------------------------------------------------

    def event(self, key: Key, previous: Status, reason: Reason) -> None:
        m = self.model[key]
        self.expected.append((key, m.status, previous, m.deleted, reason))
        m.last_reason = reason

    def answered(self, key: Key, got: Campaign, *, changed: bool) -> None:
        """got is what the call returned; changed is whether the model says it changed."""
        assert (got.customer_id, got.id) == key
        if changed:
            assert got.etag not in self.seen_etags[key], "a change kept an etag seen before"
        else:
            assert got.etag == self.etags[key], "the etag changed though nothing did"
        self.etags[key] = got.etag
        self.seen_etags[key].add(got.etag)

    def refused(self, got: Campaign | CampaignError, kind: type[CampaignError]) -> None:
        assert isinstance(got, kind), f"expected {kind.__name__}, got {got!r}"

    def live_outdial_holder(self, key: Key, outdial: str) -> Key | None:
        if not outdial:
            return None
        for other, m in self.model.items():
            if other != key and other[0] == key[0] and not m.deleted and m.outdial_id == outdial:
                return other
        return None

    # -- rules -----------------------------------------------------------------------------

    @initialize(
        wanted=st.lists(
            st.tuples(
                st.sampled_from(("", "", "", "outplan", "outdial", "nothing to run", "absent")),
                names,
                end_handles,
            ),
            min_size=len(OWN_KEYS),
            max_size=len(OWN_KEYS),
        )
    )
    def start(self, wanted: list[tuple[str, str, EndHandle]]) -> None:
        """Most ids name a campaign from the start, most of them one that can run, each with
        an outdial of its own: so that most steps act on a campaign, and many on one running."""
        assert self.run(self.domain.head_revision()) == 0
        for i, (key, (gap, name, end_handle)) in enumerate(zip(OWN_KEYS, wanted, strict=True)):
            if gap != "absent":
                outplan = "" if gap == "outplan" else OUTPLAN
                outdial = "" if gap == "outdial" else OUTDIALS[i % len(OUTDIALS)]
                actions = () if gap == "nothing to run" else (ACTION,)
                self.create(*key, "", name, outplan, outdial, "", actions, end_handle)

    @rule(
        customer=customers,
        id_=ids,
        request_id=st.sampled_from(("", *REQUEST_IDS)),
        name=names,
        outplan=outplans,
        outdial=outdials,
        queue=queues,
        actions=action_lists,
        end_handle=end_handles,
    )
    def create(
        self,
        customer: str,
        id_: str,
        request_id: str,
        name: str,
        outplan: str,
        outdial: str,
        queue: str,
        actions: tuple[Action, ...],
        end_handle: EndHandle,
    ) -> None:
        key = (customer, id_)
        draft = Campaign(
            id=id_,
            customer_id=customer,
            type=CampaignType.CALL,
            name=name,
            outplan_id=outplan,
            outdial_id=outdial,
            queue_id=queue,
            actions=list(actions),
            end_handle=end_handle,
            # Output-only: ignored.
            status=Status.RUN,
            tm_delete=1,
        )
        got = self.attempt(self.domain.create(draft, request_id))
        if request_id and (customer, request_id) in self.requests:
            first = self.requests[(customer, request_id)]
            self.answered(first, self.done(got), changed=False)
        elif any(held_id == id_ for _, held_id in self.model):
            # Of this customer or another: an id is one key.
            self.refused(got, AlreadyExists)
        elif self.live_outdial_holder(key, outdial) is not None:
            self.refused(got, FailedPrecondition)
        else:
            got = self.done(got)
            assert (got.status, got.deleted) == (Status.STOP, False)
            self.model[key] = Model(name, outplan, outdial, queue, actions, end_handle)
            self.etags[key] = got.etag
            self.seen_etags[key] = {got.etag}
            self.event(key, Status.UNSPECIFIED, Reason.CREATED)
            if request_id:
                self.requests[(customer, request_id)] = key

    @rule(
        key=keys,
        fields=st.sets(
            st.sampled_from(
                ("name", "outplan_id", "outdial_id", "queue_id", "actions", "end_handle")
            ),
            min_size=1,
        ),
        name=names,
        outplan=outplans,
        outdial=outdials,
        queue=queues,
        actions=action_lists,
        end_handle=end_handles,
        etag=st.sampled_from(("", "current", "stale")),
    )
    def update(
        self,
        key: Key,
        fields: set[str],
        name: str,
        outplan: str,
        outdial: str,
        queue: str,
        actions: tuple[Action, ...],
        end_handle: EndHandle,
        etag: str,
    ) -> None:
        customer, id_ = key
        draft = Campaign(
            id=id_,
            customer_id=customer,
            type=CampaignType.CALL,
            name=name,
            outplan_id=outplan,
            outdial_id=outdial,
            queue_id=queue,
            actions=list(actions),
            end_handle=end_handle,
        )
        sent_etag = {"": "", "current": self.etags.get(key, ""), "stale": "0" * 16}[etag]
        got = self.attempt(self.domain.update(draft, sorted(fields), sent_etag))
        m = self.model.get(key)
        if m is None:
            return self.refused(got, NotFound)
        if sent_etag and sent_etag != self.etags[key]:
            return self.refused(got, Aborted)
        if m.deleted:
            return self.refused(got, FailedPrecondition)
        sent = {
            "name": name,
            "outplan_id": outplan,
            "outdial_id": outdial,
            "queue_id": queue,
            "actions": actions,
            "end_handle": end_handle,
        }
        after = dataclasses.replace(m, **{f: sent[f] for f in fields})
        if after == m:
            assert isinstance(got, Campaign), got
            return self.answered(key, got, changed=False)
        if "outdial_id" in fields and self.live_outdial_holder(key, after.outdial_id):
            return self.refused(got, FailedPrecondition)
        if m.status == Status.RUN and after.run_unmet() - m.run_unmet():
            return self.refused(got, FailedPrecondition)
        assert isinstance(got, Campaign), got
        self.model[key] = after
        self.event(key, m.status, Reason.UPDATED)
        self.answered(key, got, changed=True)

    @rule(key=keys, force=st.booleans())
    def run_it(self, key: Key, force: bool) -> None:
        self.set_status(key, Status.RUN, force)

    @rule(key=keys, force=st.booleans())
    def stop_it(self, key: Key, force: bool) -> None:
        self.set_status(key, Status.STOP, force)

    def set_status(self, key: Key, status: Status, force: bool) -> None:
        customer, id_ = key
        got = self.attempt(self.domain.set_status(customer, id_, int(status), force))
        m = self.model.get(key)
        if m is None:
            return self.refused(got, NotFound)
        previous = m.status
        if status == Status.RUN:
            if m.status == Status.RUN:
                return self.answered(key, self.done(got), changed=False)
            if m.run_unmet():
                return self.refused(got, FailedPrecondition)
            m.status, m.finishing = Status.RUN, False
            self.end_stop(m)
        elif m.status == Status.STOP:
            return self.answered(key, self.done(got), changed=False)
        elif m.status == Status.RUN:
            if force:
                m.status = Status.STOP
                self.end_stop(m)
            else:
                m.status = Status.STOPPING
                m.stop_revision = self.done(got).revision  # the stop begins at this change
        elif force:
            m.status, m.finishing = Status.STOP, False
        elif m.finishing:
            m.finishing = False  # a person's stop calls the chain off; the drain goes on
        else:
            # Stopping already: a second STOP only asks again.
            return self.answered(key, self.done(got), changed=False)
        self.event(key, previous, Reason.REQUESTED)
        self.answered(key, self.done(got), changed=True)
        assert self.done(got).stop_revision == m.stop_revision

    def end_stop(self, m: Model) -> None:
        """The campaign runs again (or stops without a drain): no stop is left to confirm."""
        if m.stop_revision:
            m.past_stops.add(m.stop_revision)
        m.stop_revision = 0

    @rule(key=keys, which=st.sampled_from(("current", "past", "unknown")))
    def confirm_drained(self, key: Key, which: str) -> None:
        """The dialer confirms a drain: of the stop it saw last, of one that is over, or of
        a revision that names no stop of the campaign."""
        customer, id_ = key
        m = self.model.get(key)
        sent = {
            "current": m.stop_revision if m else 0,
            "past": max(m.past_stops) if m and m.past_stops else 0,
            "unknown": 10**9,
        }[which] or 10**9
        got = self.attempt(self.domain.confirm_drained(customer, id_, sent))
        if m is None:
            return self.refused(got, NotFound)
        if m.status == Status.STOPPING and sent == m.stop_revision:
            m.status, m.finishing = Status.STOP, False
            self.event(key, Status.STOPPING, Reason.DRAINED)
            return self.answered(key, self.done(got), changed=True)
        if m.status == Status.STOP and sent == m.stop_revision:
            return self.answered(key, self.done(got), changed=False)  # a retry
        self.refused(got, FailedPrecondition)

    def done(self, got: Campaign | CampaignError) -> Campaign:
        assert isinstance(got, Campaign), got
        return got

    @rule(key=keys, etag=st.sampled_from(("", "current", "stale")))
    def delete(self, key: Key, etag: str) -> None:
        customer, id_ = key
        sent_etag = {"": "", "current": self.etags.get(key, ""), "stale": "0" * 16}[etag]
        got = self.attempt(self.domain.delete(customer, id_, sent_etag))
        m = self.model.get(key)
        if m is None:
            return self.refused(got, NotFound)
        if sent_etag and sent_etag != self.etags[key]:
            return self.refused(got, Aborted)
        if m.deleted:
            return self.answered(key, self.done(got), changed=False)
        if m.status != Status.STOP:
            return self.refused(got, FailedPrecondition)
        m.deleted = True
        self.event(key, Status.STOP, Reason.DELETED)
        self.answered(key, self.done(got), changed=True)
        assert got.tm_delete is not None  # type: ignore[union-attr]

    @rule(key=keys)
    def undelete(self, key: Key) -> None:
        customer, id_ = key
        got = self.attempt(self.domain.undelete(customer, id_))
        m = self.model.get(key)
        if m is None:
            return self.refused(got, NotFound)
        if not m.deleted:
            return self.answered(key, self.done(got), changed=False)
        if self.live_outdial_holder(key, m.outdial_id) is not None:
            return self.refused(got, FailedPrecondition)
        m.deleted, m.status = False, Status.STOP
        self.event(key, Status.STOP, Reason.UNDELETED)
        self.answered(key, self.done(got), changed=True)

    @precondition(lambda self: any(m.status == Status.RUN for m in self.model.values()))
    @rule(data=st.data())
    def report_on_a_running_campaign(self, data: st.DataObject) -> None:
        """The dialer reports on what it runs: most reports find a running campaign."""
        running = sorted(k for k, m in self.model.items() if m.status == Status.RUN)
        self.report_outdial_exhausted(data.draw(st.sampled_from(running)))

    @rule(key=keys)
    def report_outdial_exhausted(self, key: Key) -> None:
        customer, id_ = key
        got = self.attempt(self.domain.report_outdial_exhausted(customer, id_))
        m = self.model.get(key)
        if m is None:
            return self.refused(got, NotFound)
        if m.status == Status.STOPPING and m.finishing:
            return self.answered(key, self.done(got), changed=False)
        if m.status != Status.RUN:
            return self.refused(got, FailedPrecondition)
        if m.end_handle == EndHandle.CONTINUE:
            if m.last_reason == Reason.OUTDIAL_EXHAUSTED:
                return self.answered(key, self.done(got), changed=False)
            # Still running; the report is a change of its own, with a new version.
            self.event(key, Status.RUN, Reason.OUTDIAL_EXHAUSTED)
            return self.answered(key, self.done(got), changed=True)
        m.status, m.finishing = Status.STOPPING, True
        m.stop_revision = self.done(got).revision
        self.event(key, Status.RUN, Reason.FINISHED)
        self.answered(key, self.done(got), changed=True)

    @precondition(lambda self: any(m.status == Status.STOPPING for m in self.model.values()))
    @rule()
    def stop_grace_runs_out(self) -> None:
        self.now += (GRACE_S + 1) * 1_000_000
        completed = self.run(self.domain.expire_stops())
        stopping = sorted(k for k, m in self.model.items() if m.status == Status.STOPPING)
        assert completed == len(stopping)
        for key in stopping:
            m = self.model[key]
            m.status, m.finishing = Status.STOP, False
            self.event(key, Status.STOPPING, Reason.GRACE_EXPIRED)
            got = self.run(self.domain.get(*key))
            assert got.etag not in self.seen_etags[key]
            self.etags[key] = got.etag
            self.seen_etags[key].add(got.etag)

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def the_log_has_one_event_per_transition_in_order(self) -> None:
        events = self.run(self.domain.events_after(self.revision, "", "", 1000))
        assert [e.revision for e in events] == list(
            range(self.revision + 1, self.revision + 1 + len(events))
        ), "revisions skip or repeat"
        got = [
            ((e.customer_id, e.campaign_id), e.status, e.previous_status, e.deleted, e.reason)
            for e in events
        ]
        # One step is one event, but for the campaigns whose grace ran out together: those
        # complete in no promised order. The order across steps is checked step by step.
        assert sorted(got) == sorted(self.expected)
        if events:
            self.revision = events[-1].revision
        self.expected = []

    @invariant()
    def each_customer_sees_its_campaigns_as_the_model_says(self) -> None:
        for customer in CUSTOMERS:
            listed = self.run(self.domain.list_page(ListFilter(customer, show_deleted=True), 0, ""))
            stored = {(c.customer_id, c.id): c for c in listed.campaigns}
            assert stored.keys() == {k for k in self.model if k[0] == customer}
            for key, got in stored.items():
                m = self.model[key]
                assert (got.status, got.deleted, got.finishing) == (
                    m.status,
                    m.deleted,
                    m.finishing,
                ), key
                assert got.etag == self.etags[key]
                assert (got.name, got.outplan_id, got.outdial_id, got.queue_id) == (
                    m.name,
                    m.outplan_id,
                    m.outdial_id,
                    m.queue_id,
                )
                assert (tuple(got.actions), got.end_handle) == (m.actions, m.end_handle)
            live = self.run(self.domain.list_page(ListFilter(customer), 0, "")).campaigns
            assert sorted(c.id for c in live) == sorted(
                k[1] for k, c in stored.items() if not c.deleted
            )
            outdials = [c.outdial_id for c in live if c.outdial_id]
            assert len(outdials) == len(set(outdials)), "an outdial serves two live campaigns"
            events = self.run(self.domain.events_after(0, customer, "", 1000))
            assert {e.customer_id for e in events} <= {customer}


CampaignRules.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    database=None,
    derandomize=True,
    # A failure prints its steps unshrunk: shrinking a sequence of database steps takes
    # minutes, longer than the suite's timeout.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
TestCampaignRules = CampaignRules.TestCase
