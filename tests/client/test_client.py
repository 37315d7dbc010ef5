"""The Python client against real servers: calls, errors, deadlines, retries and watch()."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from campaign_grpc_client import (
    DEFAULT_TIMEOUT,
    AsyncCampaignClient,
    CampaignClient,
    CampaignServiceError,
    PreconditionViolation,
    Retry,
    SnapshotReset,
    exceptions,
)
from campaign_grpc_client._watch import Resume
from campaign_grpc_client.v1 import campaign_pb2 as pb
from client_helpers import Reader, ServerThread, wait_serving
from e2e_helpers import Process, free_port
from factories import new_id, runnable_campaign

C = pb.Campaign
W = pb.WatchStatusResponse
Code = grpc.StatusCode
QUICK = Retry(initial=0.05, maximum=0.3)

# Every test here calls a real server (a thread's, a process's, or a socket that never answers).
pytestmark = pytest.mark.e2e


@pytest.fixture
def threaded(settings: Settings) -> Iterator[ServerThread]:
    """A server on its own thread and loop, for the blocking client."""
    server = ServerThread(settings)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def client(threaded: ServerThread) -> Iterator[CampaignClient]:
    with CampaignClient(threaded.target) as c:
        yield c


def change(m: Any) -> tuple[str, int, int, int]:
    return (m.campaign_id, m.status, m.previous_status, m.revision)


# -- calls and errors ---------------------------------------------------------------------


def test_the_blocking_client_creates_reads_lists_updates_runs_stops_and_deletes(
    client: CampaignClient, customer: str
) -> None:
    created = client.create_campaign(runnable_campaign(customer))
    assert created.status == C.STATUS_STOP
    assert client.get_campaign(customer, created.id) == created
    other = client.create_campaign(runnable_campaign(customer, name="second"))
    page = client.list_campaigns(customer, page_size=1)
    assert [c.id for c in page.campaigns] == [other.id]
    assert page.next_page_token
    assert [c.id for c in client.iter_campaigns(customer, page_size=1)] == [other.id, created.id]

    renamed = client.update_campaign(
        C(customer_id=customer, id=created.id, name="renamed", etag=created.etag), ["name"]
    )
    assert (renamed.name, renamed.etag != created.etag) == ("renamed", True)
    running = client.update_campaign_status(customer, created.id, C.STATUS_RUN)
    assert running.status == C.STATUS_RUN
    stopping = client.update_campaign_status(customer, created.id, C.STATUS_STOP)
    assert stopping.status == C.STATUS_STOPPING
    assert client.update_campaign_status(customer, created.id, C.STATUS_STOP) == stopping
    stopped = client.confirm_drained(customer, created.id, stopping.stop_revision)
    assert stopped.status == C.STATUS_STOP
    deleted = client.delete_campaign(customer, created.id, etag=stopped.etag)
    assert deleted.HasField("tm_delete")
    assert not client.undelete_campaign(customer, created.id).HasField("tm_delete")

    client.update_campaign_status(customer, other.id, C.STATUS_RUN)
    finished = client.report_outdial_exhausted(customer, other.id)  # END_HANDLE_STOP
    assert finished.status == C.STATUS_STOPPING

    page = client.list_campaign_events(customer, created.id, page_size=3)
    assert [e.reason for e in page.events] == [
        W.REASON_UNDELETED,
        W.REASON_DELETED,
        W.REASON_DRAINED,
    ]
    assert {e.principal for e in page.events} == {"anonymous"}
    older = client.list_campaign_events(customer, created.id, page_token=page.next_page_token)
    assert older.events[-1].reason == W.REASON_CREATED
    assert older.next_page_token == ""


def test_errors_are_classes_by_code_with_the_decoded_details(
    client: CampaignClient, customer: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument) as invalid:
        client.create_campaign(C(customer_id="bad", type=C.TYPE_CALL, service_level=200))
    assert invalid.value.code == Code.INVALID_ARGUMENT
    assert invalid.value.reason == "INVALID_ARGUMENT"
    assert invalid.value.domain == "campaign-grpc"
    assert {v.field for v in invalid.value.field_violations} == {
        "campaign.customer_id",
        "campaign.service_level",
    }

    bare = client.create_campaign(C(customer_id=customer, type=C.TYPE_CALL))
    with pytest.raises(exceptions.FailedPrecondition) as unmet:
        client.update_campaign_status(customer, bare.id, C.STATUS_RUN)
    assert unmet.value.reason == "RUN_CONDITIONS_UNMET"
    assert all(isinstance(v, PreconditionViolation) for v in unmet.value.precondition_violations)
    assert {v.subject for v in unmet.value.precondition_violations} >= {
        "outplan_id",
        "outdial_id",
    }

    missing = new_id()
    with pytest.raises(exceptions.NotFound) as not_found:
        client.get_campaign(customer, missing)
    assert (not_found.value.reason, not_found.value.metadata) == (
        "CAMPAIGN_NOT_FOUND",
        {"id": missing},
    )
    assert isinstance(not_found.value, CampaignServiceError)
    assert isinstance(not_found.value.response, grpc.RpcError)

    with pytest.raises(exceptions.Aborted) as stale:
        client.delete_campaign(customer, bare.id, etag="stale")
    assert stale.value.metadata["etag"] == bare.etag

    # The registry maps every status code to its class.
    for code in Code:
        if code != Code.OK:
            assert exceptions.exception_class_for(code).code == code


def test_every_call_has_a_deadline_by_default(tmp_path: Path, customer: str) -> None:
    # A socket that accepts connections and never answers: only a deadline ends a call.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        with CampaignClient(target) as client:
            assert client.timeout == DEFAULT_TIMEOUT == 10
        with CampaignClient(target, timeout=0.3) as client:
            with pytest.raises(exceptions.DeadlineExceeded):
                client.get_campaign(customer, new_id())
            with pytest.raises(exceptions.DeadlineExceeded):
                client.list_campaigns(customer, timeout=0.2)


# -- retries ------------------------------------------------------------------------------


class FakeUnavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return Code.UNAVAILABLE

    def details(self) -> str:
        return "connection lost"

    def trailing_metadata(self) -> tuple[()]:
        return ()


class FailFirstAttempt(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Answers the first attempt of each method UNAVAILABLE: unsent, or sent with its reply lost."""

    def __init__(self, reply_lost: bool = False) -> None:
        self.reply_lost = reply_lost
        self.attempts: collections.Counter[str] = collections.Counter()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.rsplit("/", 1)[-1]
        self.attempts[method] += 1
        if self.attempts[method] == 1:
            if self.reply_lost:
                continuation(details, request).result()
            raise FakeUnavailable()
        return continuation(details, request)


def test_a_create_whose_reply_was_lost_is_retried_into_the_same_campaign(
    threaded: ServerThread, customer: str
) -> None:
    lossy = FailFirstAttempt(reply_lost=True)
    with (
        grpc.insecure_channel(threaded.target) as channel,
        CampaignClient(channel=grpc.intercept_channel(channel, lossy), retry=QUICK) as client,
    ):
        created = client.create_campaign(runnable_campaign(customer))
        assert lossy.attempts["CreateCampaign"] == 2
        assert [c.id for c in client.iter_campaigns(customer)] == [created.id]


def test_only_calls_that_are_safe_to_repeat_are_retried(
    threaded: ServerThread, customer: str
) -> None:
    with CampaignClient(threaded.target) as plain:
        a = plain.create_campaign(runnable_campaign(customer))
        b = plain.create_campaign(runnable_campaign(customer))
        plain.update_campaign_status(customer, b.id, C.STATUS_RUN)
    renamed = C(customer_id=customer, id=a.id, name="renamed")

    def stop_revision(campaign_id: str) -> int:
        with CampaignClient(threaded.target) as plain:
            return plain.get_campaign(customer, campaign_id).stop_revision

    calls: dict[str, tuple[Callable[[CampaignClient], Any], bool]] = {
        "GetCampaign": (lambda c: c.get_campaign(customer, a.id), True),
        "ListCampaigns": (lambda c: c.list_campaigns(customer), True),
        "CreateCampaign": (lambda c: c.create_campaign(runnable_campaign(customer)), True),
        "UpdateCampaign": (lambda c: c.update_campaign(renamed, ["name"]), False),
        "DeleteCampaign": (lambda c: c.delete_campaign(customer, a.id), False),
        "UndeleteCampaign": (lambda c: c.undelete_campaign(customer, a.id), True),
        # A STOP only asks: asked twice, it still waits for the dialer's drain.
        "UpdateCampaignStatus": (
            lambda c: c.update_campaign_status(customer, b.id, C.STATUS_STOP),
            True,
        ),
        # It names the stop it confirms: repeated, it completes nothing more.
        "ConfirmDrained": (lambda c: c.confirm_drained(customer, b.id, stop_revision(b.id)), True),
    }
    for method, (make_call, retried) in calls.items():
        failing = FailFirstAttempt()
        seen: list[CampaignServiceError] = []
        retry = dataclasses.replace(QUICK, on_error=seen.append)
        with (
            grpc.insecure_channel(threaded.target) as channel,
            CampaignClient(channel=grpc.intercept_channel(channel, failing), retry=retry) as c,
        ):
            if retried:
                make_call(c)
                assert failing.attempts[method] == 2, method
                assert [type(e) for e in seen] == [exceptions.Unavailable], method
            else:
                with pytest.raises(exceptions.Unavailable):
                    make_call(c)
                assert (failing.attempts[method], seen) == (1, []), method

    # With an etag an update (and a delete) is safe to repeat.
    failing = FailFirstAttempt()
    with (
        grpc.insecure_channel(threaded.target) as channel,
        CampaignClient(channel=grpc.intercept_channel(channel, failing), retry=QUICK) as c,
    ):
        renamed.etag = a.etag
        assert c.update_campaign(renamed, ["name"]).name == "renamed"
    assert failing.attempts == {"UpdateCampaign": 2}
    with CampaignClient(threaded.target) as plain:
        assert plain.get_campaign(customer, b.id).status == C.STATUS_STOP


def test_a_stop_and_a_confirmation_whose_replies_were_lost_are_retried_safely(
    threaded: ServerThread, customer: str
) -> None:
    with CampaignClient(threaded.target) as plain:
        c = plain.create_campaign(runnable_campaign(customer))
        plain.update_campaign_status(customer, c.id, C.STATUS_RUN)
    lossy = FailFirstAttempt(reply_lost=True)
    with (
        grpc.insecure_channel(threaded.target) as channel,
        CampaignClient(channel=grpc.intercept_channel(channel, lossy), retry=QUICK) as client,
    ):
        # Carried out, its reply lost, sent again: the drain is not skipped.
        stopping = client.update_campaign_status(customer, c.id, C.STATUS_STOP)
        assert stopping.status == C.STATUS_STOPPING
        stopped = client.confirm_drained(customer, c.id, stopping.stop_revision)
        assert stopped.status == C.STATUS_STOP
    assert (lossy.attempts["UpdateCampaignStatus"], lossy.attempts["ConfirmDrained"]) == (2, 2)
    with CampaignClient(threaded.target) as plain:
        assert plain.get_campaign(customer, c.id) == stopped


# -- watch() ------------------------------------------------------------------------------


def test_watch_delivers_every_change_once_across_a_killed_and_restarted_server(
    settings: Settings, tmp_path: Path, customer: str
) -> None:
    target = f"127.0.0.1:{free_port()}"
    args = ["--listen", target, "--database-url", settings.database_url]
    args += ["--heartbeat-interval", "0.2"]
    lost = threading.Event()
    retry = dataclasses.replace(QUICK, on_error=lambda error: lost.set())
    procs = [Process(args, tmp_path / "first.log")]
    writer = ServerThread(settings)
    try:
        wait_serving(target, procs[0])
        with CampaignClient(target, watch_retry=retry) as client:
            a = client.create_campaign(runnable_campaign(customer))
            reader = Reader(client.watch(customer))
            try:
                first = [reader.next(), reader.next()]
                assert [(m.kind, m.campaign_id) for m in first] == [
                    (W.KIND_SNAPSHOT, a.id),
                    (W.KIND_SNAPSHOT_END, ""),
                ]
                client.update_campaign_status(customer, a.id, C.STATUS_RUN)
                seen = [reader.next()]

                procs[0].kill()  # SIGKILL: no goodbye to the watch
                assert lost.wait(10), "the watch did not notice"
                # Changes while the watched server is down, through another on the same file.
                writer.start()
                with CampaignClient(writer.target) as other:
                    other.update_campaign_status(customer, a.id, C.STATUS_STOP)
                    b = other.create_campaign(runnable_campaign(customer))
                writer.stop()
                procs.append(Process(args, tmp_path / "second.log"))
                wait_serving(target, procs[1])
                client.update_campaign_status(customer, b.id, C.STATUS_RUN)

                while len(seen) < 4:
                    seen.append(reader.next())
            finally:
                assert reader.close()
    finally:
        writer.close()
        for proc in procs:
            proc.kill()

    assert [change(m) for m in seen] == [
        (a.id, C.STATUS_RUN, C.STATUS_STOP, 2),
        (a.id, C.STATUS_STOPPING, C.STATUS_RUN, 3),
        (b.id, C.STATUS_STOP, C.STATUS_UNSPECIFIED, 4),
        (b.id, C.STATUS_RUN, C.STATUS_STOP, 5),
    ]
    assert all(m.kind == W.KIND_CHANGE for m in seen)


async def test_watch_starts_again_from_a_snapshot_when_the_server_has_a_new_log(
    start_server: Callable[..., Any], settings: Settings, tmp_path: Path, customer: str
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    first: App = await start_server(settings, listen=listen)
    async with AsyncCampaignClient(listen, watch_retry=QUICK) as client:
        a = await client.create_campaign(runnable_campaign(customer))
        await client.update_campaign_status(customer, a.id, C.STATUS_RUN)
        state: dict[str, int] = {}
        resets: list[SnapshotReset] = []
        watch = client.watch(customer)
        try:

            async def read_until(done: Callable[[], bool]) -> None:
                while not done():
                    item = await asyncio.wait_for(anext(watch), 10)
                    if isinstance(item, SnapshotReset):
                        resets.append(item)
                        state.clear()
                    elif item.kind in (W.KIND_SNAPSHOT, W.KIND_CHANGE):
                        state[item.campaign_id] = item.status

            await read_until(lambda: watch.revision == 2)
            assert state == {a.id: C.STATUS_RUN}
            # The server comes back on an empty database (a restore from an old backup):
            # revision 2 is not in its log.
            await first.stop()
            fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
            await start_server(settings, listen=listen, database_url=fresh)
            b = await client.create_campaign(runnable_campaign(customer))
            await read_until(lambda: b.id in state)
        finally:
            await watch.aclose()

    assert resets == [SnapshotReset("REVISION_OUT_OF_RANGE", 2)]
    assert state == {b.id: C.STATUS_STOP}


def test_watch_passes_back_the_timeline_of_the_revision_it_resumes_from() -> None:
    resume = Resume("", "", 0, heartbeats=False)
    assert resume.request().timeline == ""
    old, new = "a" * 16, "b" * 16
    resume.accept(W(kind=W.KIND_SNAPSHOT_END, revision=3, timeline=old))
    resume.accept(W(kind=W.KIND_CHANGE, revision=4, timeline=old))
    assert (resume.request().after_revision, resume.request().timeline) == (4, old)
    # The log forked after 4: the server names revision 4 by its new timeline.
    resume.accept(W(kind=W.KIND_HEARTBEAT, revision=4, timeline=new))
    assert (resume.request().after_revision, resume.request().timeline) == (4, new)
    # A duplicate of an older revision changes nothing.
    resume.accept(W(kind=W.KIND_CHANGE, revision=2, timeline=old))
    assert resume.request().timeline == new
    resume.after(exceptions.OutOfRange("forked"))
    assert (resume.request().after_revision, resume.request().timeline) == (0, "")


async def test_watch_from_a_revision_of_a_log_that_forked_starts_again_from_a_snapshot(
    start_server: Callable[..., Any], settings: Settings, tmp_path: Path, customer: str
) -> None:
    path = tmp_path / "campaigns.db"
    app: App = await start_server(settings, database_url=f"sqlite:///{path}")
    async with AsyncCampaignClient(f"127.0.0.1:{app.port}", watch_retry=QUICK) as client:
        a = await client.create_campaign(runnable_campaign(customer))  # revision 1
        with (
            contextlib.closing(sqlite3.connect(path)) as live,
            contextlib.closing(sqlite3.connect(tmp_path / "copy.db")) as copy,
        ):
            live.backup(copy)
        for _ in range(2):  # revisions 2 to 5, which the copy does not have
            await client.update_campaign_status(customer, a.id, C.STATUS_RUN)
            await client.update_campaign_status(customer, a.id, C.STATUS_STOP, force=True)
        watch = client.watch(customer, heartbeats=True)
        async for item in watch:
            if not isinstance(item, SnapshotReset) and item.revision == 5:
                break
        saved = (watch.revision, watch.timeline)
        await watch.aclose()
        assert saved[0] == 5
        assert saved[1]

        # The server checks its log once a poll (0.1 s here): a restore within the same
        # instant as the last write would be a race no real restore runs.
        for _ in range(100):
            if app.store.identity.floor >= 5:
                break
            await asyncio.sleep(0.02)
        # The older copy restored under the server, which then writes past revision 5.
        with (
            contextlib.closing(sqlite3.connect(tmp_path / "copy.db")) as copy,
            contextlib.closing(sqlite3.connect(path)) as live,
        ):
            copy.backup(live)
        b = None
        for _ in range(100):
            try:
                b = await client.create_campaign(runnable_campaign(customer))
                break
            except exceptions.Unavailable:  # until the server has recognised the file
                await asyncio.sleep(0.05)
        assert b is not None
        for _ in range(3):
            await client.update_campaign_status(customer, b.id, C.STATUS_RUN)
            await client.update_campaign_status(customer, b.id, C.STATUS_STOP, force=True)

        watch = client.watch(customer, after_revision=saved[0], timeline=saved[1])
        try:
            first = await asyncio.wait_for(anext(watch), 10)
            assert first == SnapshotReset("REVISION_OUT_OF_RANGE", 5)
            snapshot = []
            while (item := await asyncio.wait_for(anext(watch), 10)).kind == W.KIND_SNAPSHOT:
                snapshot.append(item.campaign_id)
            assert item.kind == W.KIND_SNAPSHOT_END
            assert sorted(snapshot) == sorted([a.id, b.id])
            assert watch.timeline not in ("", saved[1])
        finally:
            await watch.aclose()


def test_watch_resumes_after_a_given_revision_and_hides_heartbeats_unless_asked(
    client: CampaignClient, customer: str
) -> None:
    a = client.create_campaign(runnable_campaign(customer))
    client.update_campaign_status(customer, a.id, C.STATUS_RUN)  # revision 2
    reader = Reader(client.watch(customer, after_revision=1))
    try:
        replayed = reader.next()
        assert (replayed.kind, change(replayed)) == (
            W.KIND_CHANGE,
            (a.id, C.STATUS_RUN, C.STATUS_STOP, 2),
        )
        client.update_campaign_status(customer, a.id, C.STATUS_STOP, force=True)
        # Heartbeats (every 0.5 s on the test server) came in between, and stayed hidden.
        assert change(reader.next()) == (a.id, C.STATUS_STOP, C.STATUS_RUN, 3)
    finally:
        assert reader.close(), "close() from another thread did not end the watch"

    reader = Reader(client.watch(customer, after_revision=3, heartbeats=True))
    try:
        heartbeat = reader.next()
        assert (heartbeat.kind, heartbeat.revision) == (W.KIND_HEARTBEAT, 3)
        assert reader.watch.revision == 3
    finally:
        assert reader.close()


def test_watch_raises_the_errors_it_cannot_recover_from(
    client: CampaignClient, customer: str
) -> None:
    for watch, error in [
        (client.watch(customer, new_id()), exceptions.NotFound),
        (client.watch("bad"), exceptions.InvalidArgument),
    ]:
        reader = Reader(watch)
        try:
            with pytest.raises(error):
                reader.next()
        finally:
            assert reader.close()


def test_watch_of_a_revision_ahead_of_the_log_starts_from_a_snapshot(
    client: CampaignClient, customer: str
) -> None:
    a = client.create_campaign(runnable_campaign(customer))
    reader = Reader(client.watch(customer, after_revision=1000))
    try:
        items = [reader.next(), reader.next(), reader.next()]
    finally:
        assert reader.close()
    assert items[0] == SnapshotReset("REVISION_OUT_OF_RANGE", 1000)
    assert [(m.kind, m.campaign_id, m.revision) for m in items[1:]] == [
        (W.KIND_SNAPSHOT, a.id, 1),
        (W.KIND_SNAPSHOT_END, "", 1),
    ]
