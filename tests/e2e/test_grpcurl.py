"""grpcurl 1.8.6 against a running server through reflection alone: what operators type.

`make test` puts the real grpcurl binary beside the venv's Python (see the Makefile).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import serving

GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVICE = "campaign.v1.CampaignService"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    """HOST:PORT of `campaign-grpc serve` running in a subprocess."""
    assert GRPCURL.exists(), f"{GRPCURL} is missing: run `make test` (it fetches grpcurl)"
    with serving(tmp_path) as address:
        yield address


def grpcurl(target: str, *args: str, data: Any = None) -> subprocess.CompletedProcess[str]:
    command = [str(GRPCURL), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return subprocess.run(
        [*command, target, *args], capture_output=True, text=True, timeout=60, check=False
    )


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout) if done.stdout.lstrip().startswith("{") else done.stdout


def test_describe_shows_the_contracts_documentation(target: str) -> None:
    service = ok(grpcurl(target, "describe", SERVICE))
    assert "// CampaignService owns outbound dialing campaigns" in service
    assert "rpc ConfirmDrained ( .campaign.v1.ConfirmDrainedRequest )" in service
    assert "// The dialer confirms that a stopping campaign's calls are drained" in service
    campaign = ok(grpcurl(target, "describe", "campaign.v1.Campaign"))
    assert "unique across all customers" in campaign
    assert "int64 stop_revision = 18;" in campaign


def test_an_operator_creates_updates_runs_stops_and_confirms(target: str) -> None:
    customer = str(uuid.uuid4())
    created = ok(
        grpcurl(
            target,
            f"{SERVICE}/CreateCampaign",
            data={
                "campaign": {
                    "customerId": customer,
                    "type": "TYPE_CALL",
                    "name": "spring promo",
                    "outplanId": str(uuid.uuid4()),
                    "outdialId": str(uuid.uuid4()),
                    "actions": [{"type": "answer"}, {"type": "talk", "option": {"text": "hi"}}],
                }
            },
        )
    )["campaign"]
    key = {"customerId": customer, "id": created["id"]}
    # grpcurl 1.8.6 takes a field mask as an object of paths (buf curl as the string "name").
    renamed = ok(
        grpcurl(
            target,
            f"{SERVICE}/UpdateCampaign",
            data={
                "campaign": {**key, "name": "summer promo", "etag": created["etag"]},
                "updateMask": {"paths": ["name"]},
            },
        )
    )["campaign"]
    assert (renamed["name"], renamed["etag"] != created["etag"]) == ("summer promo", True)
    stale = grpcurl(
        target,
        f"{SERVICE}/UpdateCampaign",
        data={
            "campaign": {**key, "name": "x", "etag": created["etag"]},
            "updateMask": {"paths": ["name"]},
        },
    )
    assert stale.returncode != 0
    assert "Code: Aborted" in stale.stderr

    status = f"{SERVICE}/UpdateCampaignStatus"
    assert (
        ok(grpcurl(target, status, data={**key, "status": "STATUS_RUN"}))["campaign"]["status"]
        == "STATUS_RUN"
    )
    stopping = ok(grpcurl(target, status, data={**key, "status": "STATUS_STOP"}))["campaign"]
    assert stopping["status"] == "STATUS_STOPPING"
    confirm = f"{SERVICE}/ConfirmDrained"
    stopped = ok(grpcurl(target, confirm, data={**key, "stopRevision": stopping["stopRevision"]}))
    assert stopped["campaign"]["status"] == "STATUS_STOP"

    wrong = grpcurl(target, confirm, data={**key, "stopRevision": "1"})
    assert wrong.returncode != 0
    assert "Code: FailedPrecondition" in wrong.stderr
