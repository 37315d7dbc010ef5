"""`buf curl` against a running server through reflection alone: the debugging session of a user.

No proto file is given to buf: every schema comes from the server's reflection service.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import serving

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "campaign.v1.CampaignService"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """The base URL of `campaign-grpc serve` running in a subprocess."""
    assert shutil.which("npx") is not None, "npx is not on PATH: install Node.js"
    assert (ROOT / "node_modules" / ".bin" / "buf").exists(), "run `make lint` or `npm ci` first"
    with serving(tmp_path, "--heartbeat-interval", "0.5") as target:
        yield f"http://{target}"


def buf_curl(*args: str) -> subprocess.CompletedProcess[str]:
    command = ["npx", "--no-install", "buf", "curl", "--protocol", "grpc"]
    return subprocess.run(
        [*command, "--http2-prior-knowledge", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def documents(text: str) -> list[Any]:
    """The JSON documents buf printed one after the other."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def parallel(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda args: buf_curl(*args), calls))


def test_a_buf_curl_session_through_reflection(url: str) -> None:
    customer = str(uuid.uuid4())
    campaign = {
        "customerId": customer,
        "type": "TYPE_CALL",
        "name": "spring promo",
        "outplanId": str(uuid.uuid4()),
        "outdialId": str(uuid.uuid4()),
        "actions": [{"type": "answer"}, {"type": "talk", "option": {"text": "hello"}}],
    }
    bad = {"campaign": {"customerId": "bad", "type": "TYPE_CALL", "serviceLevel": 200}}
    services, methods, created, invalid = parallel(
        ("--list-services", url),
        ("--list-methods", url),
        ("-d", json.dumps({"campaign": campaign}), f"{url}/{SERVICE}/CreateCampaign"),
        ("-d", json.dumps(bad), f"{url}/{SERVICE}/CreateCampaign"),
    )

    assert {SERVICE, "grpc.health.v1.Health"} <= set(ok(services).split())
    assert {f"{SERVICE}/{m}" for m in ("CreateCampaign", "GetCampaign", "WatchStatus")} <= set(
        ok(methods).split()
    )
    (answer,) = documents(ok(created))
    c = answer["campaign"]
    assert UUID.fullmatch(c["id"])
    assert (c["customerId"], c["status"], c["endHandle"]) == (
        customer,
        "STATUS_STOP",
        "END_HANDLE_STOP",
    )
    assert RFC3339.fullmatch(c["tmCreate"])
    assert c["actions"][1]["option"] == {"text": "hello"}
    assert "tmUpdate" not in c

    assert invalid.returncode != 0
    (error,) = documents(invalid.stdout + invalid.stderr)
    assert error["code"] == "invalid_argument"
    assert "campaign.service_level" in error["message"]
    assert [d["type"] for d in error["details"]] == [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
    ]

    key = json.dumps({"customerId": customer, "id": c["id"]})
    run = json.dumps({"customerId": customer, "id": c["id"], "status": "STATUS_RUN"})
    assert documents(ok(buf_curl("-d", key, f"{url}/{SERVICE}/GetCampaign"))) == [answer]
    (running,) = documents(ok(buf_curl("-d", run, f"{url}/{SERVICE}/UpdateCampaignStatus")))
    assert running["campaign"]["status"] == "STATUS_RUN"
    assert RFC3339.fullmatch(running["campaign"]["tmUpdate"])

    # A watch never ends by itself: buf's --timeout ends it, after what it printed.
    watch = f"{url}/{SERVICE}/WatchStatus"
    after_1 = {"customerId": customer, "afterRevision": 1}
    snapshot, replay = parallel(
        ("--timeout", "1.5s", "-d", json.dumps({"customerId": customer}), watch),
        ("--timeout", "1.5s", "-d", json.dumps(after_1), watch),
    )
    first, end, *beats = documents(snapshot.stdout)
    assert (first["kind"], first["campaignId"], first["status"], first["revision"]) == (
        "KIND_SNAPSHOT",
        c["id"],
        "STATUS_RUN",
        "2",
    )
    assert RFC3339.fullmatch(first["tmEvent"])
    # Each says how often heartbeats come, so that a client can tell a quiet stream from a dead
    # one.
    # And which timeline of the log its revision is of, to send back with it on a resume.
    beat = {"revision": "2", "heartbeatInterval": "0.500s", "timeline": first["timeline"]}
    assert re.fullmatch(r"[0-9a-f]{16}", first["timeline"])
    assert end == {"kind": "KIND_SNAPSHOT_END", **beat}
    assert all(b == {"kind": "KIND_HEARTBEAT", **beat} for b in beats)
    assert "deadline_exceeded" in snapshot.stderr

    change = documents(replay.stdout)[0]
    assert {k: change[k] for k in ("kind", "campaignId", "status", "previousStatus", "reason")} == {
        "kind": "KIND_CHANGE",
        "campaignId": c["id"],
        "status": "STATUS_RUN",
        "previousStatus": "STATUS_STOP",
        "reason": "REASON_REQUESTED",
    }
    assert change["revision"] == "2"
