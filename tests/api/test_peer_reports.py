"""What the server tells of misbehaving peers: counted always, logged once per address and
reason an interval; and when a connection's aborted calls get it closed."""

from __future__ import annotations

import logging
import socket

import pytest

from campaign_grpc.ops.connections import AbortedCalls, peer_address, shut_down
from campaign_grpc.ops.peer_reports import PeerReports, peer_host


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_peer_strings_are_read_as_grpc_writes_them() -> None:
    assert peer_address("ipv4:10.1.2.3:5678") == ("10.1.2.3", 5678)
    assert peer_address("ipv6:[::1]:443") == ("::1", 443)
    assert peer_address("unix:/tmp/socket") is None
    assert peer_host("ipv4:10.1.2.3:5678") == "10.1.2.3"
    assert peer_host("ipv6:[::1]:443") == "::1"


def test_each_refusal_is_counted_but_logged_once_per_address_and_reason_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    reports = PeerReports(interval=60, clock=clock)
    told: list[tuple[str, str]] = []
    reports.listeners.append(lambda what, reason: told.append((what, reason)))
    caplog.set_level(logging.WARNING, "campaign_grpc.ops.peer_reports")

    for port in range(1000, 1010):
        reports.refused("REQUEST_NOT_RECEIVED", f"ipv4:10.0.0.1:{port}", "late")
    reports.refused("MALFORMED_REQUEST", "ipv4:10.0.0.1:1000", "no message")
    reports.refused("REQUEST_NOT_RECEIVED", "ipv4:10.0.0.2:1000", "late")
    clock.now = 61
    reports.closed("ABORTED_CALLS", "ipv4:10.0.0.1:1011", "resets")
    reports.refused("REQUEST_NOT_RECEIVED", "ipv4:10.0.0.1:1012", "late")

    assert reports.counts["refused", "REQUEST_NOT_RECEIVED"] == 12
    assert len(told) == 14
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert lines[0].startswith("refused a call from ipv4:10.0.0.1:1000: REQUEST_NOT_RECEIVED")
    assert lines[3].startswith("closed the connection of ipv4:10.0.0.1:1011: ABORTED_CALLS")


def test_a_connection_is_closed_once_past_the_limit_within_the_window() -> None:
    clock = Clock()
    closed: list[str] = []
    calls = AbortedCalls(limit=3, close=closed.append, window=10, clock=clock)
    for _ in range(3):
        calls.count("ipv4:10.0.0.1:1")
    clock.now = 11  # a new window: the old ones no longer count
    for _ in range(3):
        calls.count("ipv4:10.0.0.1:1")
    assert closed == []

    calls.count("ipv4:10.0.0.1:1")
    calls.count("ipv4:10.0.0.1:1")
    calls.count("ipv4:10.0.0.1:2")

    assert closed == ["ipv4:10.0.0.1:1"]


def test_shut_down_ends_the_connection_from_that_peer_only() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        first = socket.create_connection(("127.0.0.1", port))
        second = socket.create_connection(("127.0.0.1", port))
        accepted = [listener.accept()[0] for _ in range(2)]
        try:
            host, first_port = first.getsockname()[:2]

            assert shut_down(f"ipv4:{host}:{first_port}")

            first.settimeout(5)
            assert first.recv(1) == b""  # the server side went away
            second.sendall(b"x")
            by_port = {s.getpeername()[1]: s for s in accepted}
            assert by_port[second.getsockname()[1]].recv(1) == b"x"
            assert not shut_down("ipv4:127.0.0.1:1")
        finally:
            for s in (first, second, *accepted):
                s.close()
