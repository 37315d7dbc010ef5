"""The Python client as a distribution of its own (clients/python): installed into an empty venv
with only its dependencies, it calls a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import Process, free_port, wait_serving
from toolchains import ROOT, run

CLIENT_PROJECT = ROOT / "clients" / "python"

# What a caller does with the client alone: every answer it checks is printed as JSON.
CALLER = """
import json, sys, uuid
from campaign_grpc.client import Action, Campaign, CampaignClient, exceptions

customer = str(uuid.uuid4())
with CampaignClient(sys.argv[1]) as client:
    created = client.create_campaign(Campaign(
        customer_id=customer, type=Campaign.TYPE_CALL, name="alone",
        outplan_id=str(uuid.uuid4()), outdial_id=str(uuid.uuid4()),
        actions=[Action(type="answer")],
    ))
    ran = client.update_campaign_status(customer, created.id, Campaign.STATUS_RUN)
    try:
        client.get_campaign(customer, str(uuid.uuid4()))
        missing = None
    except exceptions.NotFound as err:
        missing = err.reason
    with client.watch(customer) as watch:
        first = next(iter(watch))
print(json.dumps({
    "created": created.id,
    "ran": Campaign.Status.Name(ran.status),
    "missing": missing,
    "watched": [first.campaign_id, Campaign.Status.Name(first.status)],
}))
"""


def name(text: str) -> str:
    """A distribution's normalized name (PEP 503), from a name or a requirement."""
    match = re.match(r"[A-Za-z0-9._-]+", text)
    assert match is not None, text
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def requirements(pyproject: Path) -> dict[str, str]:
    """Each dependency of a project, by its name."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return {name(text): text for text in project["dependencies"]}


def test_the_client_distribution_is_versioned_and_pinned_as_the_server() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((CLIENT_PROJECT / "pyproject.toml").read_text())["project"]
    assert client["version"] == server["version"]
    assert client["requires-python"] == server["requires-python"]
    server_needs = requirements(ROOT / "pyproject.toml")
    client_needs = requirements(CLIENT_PROJECT / "pyproject.toml")
    for name in ("grpcio", "protobuf"):
        assert client_needs[name] == server_needs[name]


@pytest.fixture
def server_address(tmp_path: Path) -> Iterator[str]:
    target = f"127.0.0.1:{free_port()}"
    database = f"sqlite:///{tmp_path / 'campaigns.db'}"
    proc = Process(["--listen", target, "--database-url", database], tmp_path / "server.log")
    try:
        asyncio.run(wait_serving(target, proc))
        yield target
    finally:
        proc.kill()


@pytest.mark.timeout(600)
def test_the_client_alone_installs_into_an_empty_venv_and_calls_a_server(
    tmp_path: Path, server_address: str
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    # setuptools builds in the project's build/: leftovers of an older build would be installed.
    shutil.rmtree(CLIENT_PROJECT / "build", ignore_errors=True)
    try:
        run(
            [python, "-m", "pip", "install", "--quiet", "--prefer-binary", CLIENT_PROJECT],
            timeout=480,
        )
    finally:
        shutil.rmtree(CLIENT_PROJECT / "build", ignore_errors=True)

    listed = json.loads(run([python, "-m", "pip", "list", "--format=json"], timeout=60))
    installed = {name(package["name"]) for package in listed}
    client_needs = set(requirements(CLIENT_PROJECT / "pyproject.toml"))
    server_only = set(requirements(ROOT / "pyproject.toml")) - client_needs
    assert "campaign-grpc-client" in installed
    assert client_needs <= installed
    assert not installed & server_only, installed & server_only
    assert "campaign-grpc" not in installed

    # Run outside the checkout, with nothing of it on the path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    caller = [python, "-c", CALLER, server_address]
    answer = json.loads(run(caller, cwd=tmp_path, env=env, timeout=60))
    assert answer["ran"] == "STATUS_RUN"
    assert answer["missing"] == "CAMPAIGN_NOT_FOUND"
    assert answer["watched"] == [answer["created"], "STATUS_RUN"]
    # The server's modules did not come along.
    no_server = "import campaign_grpc.ops.server"
    done = subprocess.run(
        [python, "-c", no_server], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert done.returncode != 0
    assert b"ModuleNotFoundError" in done.stderr
