"""campaign-grpc-client as its users get it: the wheel `make dist-python` builds, installed with
pip into an empty venv (its dependencies from PyPI), calling a real server from outside the
checkout; then beside the server's wheel, and again once that is uninstalled."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import Process, free_port, wait_serving
from toolchains import ROOT, run

CLIENT_PROJECT = ROOT / "clients" / "python"

# What a caller does with the client alone: every answer it checks is printed as JSON. The
# retries are seen against a small server of its own, which answers UNAVAILABLE twice before
# it answers, and a status without details is its too.
CALLER = r'''
import json, sys, uuid
from concurrent import futures

import grpc

from campaign_grpc_client import (
    Action, Campaign, CampaignClient, Retry, exceptions, service_config,
)
from campaign_grpc_client.v1 import campaign_pb2, campaign_pb2_grpc


def campaign(customer, name):
    return Campaign(
        customer_id=customer, type=Campaign.TYPE_CALL, name=name,
        outplan_id=str(uuid.uuid4()), outdial_id=str(uuid.uuid4()),
        actions=[Action(type="answer")],
    )


def against_the_server(target):
    customer = str(uuid.uuid4())
    with CampaignClient(target) as client:
        first = client.create_campaign(campaign(customer, "first"))
        with client.watch(customer) as watch:
            items = iter(watch)
            snapshot = next(items)
            assert next(items).kind == snapshot.KIND_SNAPSHOT_END
            client.update_campaign_status(customer, first.id, Campaign.STATUS_RUN)
            ran = next(items)
            revision, timeline = watch.revision, watch.timeline
        second = client.create_campaign(campaign(customer, "second"))
        with client.watch(customer, after_revision=revision, timeline=timeline) as watch:
            resumed = next(iter(watch))
        try:
            client.get_campaign(customer, str(uuid.uuid4()))
            missing = None
        except exceptions.NotFound as err:
            missing = [err.code.name, err.reason]
    return {
        "first": first.id,
        "second": second.id,
        "snapshot": [snapshot.campaign_id, Campaign.Status.Name(snapshot.status)],
        "ran": [ran.campaign_id, Campaign.Status.Name(ran.status), ran.revision],
        "resumed": [resumed.campaign_id, resumed.revision, resumed.kind == resumed.KIND_CHANGE],
        "revision": revision,
        "missing": missing,
    }


class Flaky(campaign_pb2_grpc.CampaignServiceServicer):
    """UNAVAILABLE to the first two attempts of each GetCampaign, then the campaign; and
    NOT_FOUND without details to every DeleteCampaign."""

    def __init__(self):
        self.attempts = 0

    def GetCampaign(self, request, context):
        self.attempts += 1
        if self.attempts % 3:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        got = campaign_pb2.Campaign(id=request.id, customer_id=request.customer_id)
        return campaign_pb2.GetCampaignResponse(campaign=got)

    def DeleteCampaign(self, request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no details")


def against_a_flaky_server():
    flaky = Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    campaign_pb2_grpc.add_CampaignServiceServicer_to_server(flaky, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        with CampaignClient(target, retry=Retry(initial=0.01, maximum=0.05)) as client:
            got = client.get_campaign("c", "x")
            by_the_client = [got.id, flaky.attempts]
            try:
                client.delete_campaign("c", "x")
                bare = None
            except exceptions.NotFound as err:
                bare = [err.reason, err.details, err.field_violations, err.metadata]
        # A plain channel with the packaged service config retries by itself.
        flaky.attempts = 0
        options = [("grpc.service_config", service_config()), ("grpc.enable_retries", 1)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            got = stub.GetCampaign(campaign_pb2.GetCampaignRequest(id="y"), timeout=10)
            by_the_channel = [got.campaign.id, flaky.attempts]
    finally:
        server.stop(None)
    return {"by_the_client": by_the_client, "by_the_channel": by_the_channel, "bare": bare}


print(json.dumps({**against_the_server(sys.argv[1]), **against_a_flaky_server()}))
'''


def name(text: str) -> str:
    """A distribution's normalized name (PEP 503), from a name or a requirement."""
    match = re.match(r"[A-Za-z0-9._-]+", text)
    assert match is not None, text
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def project(pyproject: Path) -> dict[str, Any]:
    return dict(tomllib.loads(pyproject.read_text())["project"])


def requirements(pyproject: Path) -> dict[str, str]:
    """Each dependency of a project, by its name."""
    return {name(text): text for text in project(pyproject)["dependencies"]}


def test_the_client_has_the_version_of_the_server_and_requires_what_it_does() -> None:
    version = (ROOT / "VERSION").read_text().strip()
    server = project(ROOT / "pyproject.toml")
    client = project(CLIENT_PROJECT / "pyproject.toml")
    assert client["version"] == server["version"] == version
    assert client["requires-python"] == server["requires-python"]
    server_needs = requirements(ROOT / "pyproject.toml")
    client_needs = requirements(CLIENT_PROJECT / "pyproject.toml")
    assert server_needs["campaign-grpc-client"] == f"campaign-grpc-client=={version}"
    for dependency in ("grpcio", "protobuf"):
        assert client_needs[dependency] == server_needs[dependency]


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


def wheel(project_dir: Path, out: Path) -> Path:
    """The project's wheel as `make dist-python` builds it (from its sdist)."""
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", out, project_dir], timeout=300
    )
    (found,) = out.glob("*.whl")
    return found


def files(wheel_file: Path) -> list[str]:
    with zipfile.ZipFile(wheel_file) as archive:
        return archive.namelist()


@pytest.mark.timeout(900)
def test_the_client_wheel_alone_and_beside_the_server(tmp_path: Path, server_address: str) -> None:
    client_wheel = wheel(CLIENT_PROJECT, tmp_path / "client-dist")
    server_wheel = wheel(ROOT, tmp_path / "server-dist")

    # The client's wheel is campaign_grpc_client alone, with its stubs and service config,
    # and no top-level `campaign` package; the server's holds none of the client's files.
    client_files = files(client_wheel)
    assert {f.split("/")[0] for f in client_files} == {
        "campaign_grpc_client",
        "campaign_grpc_client-0.1.0.dist-info",
    }
    for packaged in ("v1/campaign_pb2.py", "v1/campaign_pb2.pyi", "v1/campaign_pb2_grpc.py"):
        assert f"campaign_grpc_client/{packaged}" in client_files
    for packaged in ("v1/options_pb2.py", "methods.py", "py.typed", "service_config.json"):
        assert f"campaign_grpc_client/{packaged}" in client_files
    server_files = files(server_wheel)
    assert {f.split("/")[0] for f in server_files} == {
        "campaign_grpc",
        "campaign_grpc-0.1.0.dist-info",
    }
    assert "campaign_grpc/api/campaign_descriptor.binpb" in server_files

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--prefer-binary"]
    run([*pip, client_wheel], timeout=480)

    listed = json.loads(run([python, "-m", "pip", "list", "--format=json"], timeout=60))
    installed = {name(package["name"]) for package in listed}
    client_needs = set(requirements(CLIENT_PROJECT / "pyproject.toml"))
    server_only = (
        set(requirements(ROOT / "pyproject.toml")) - client_needs - {"campaign-grpc-client"}
    )
    assert client_needs | {"campaign-grpc-client"} <= installed
    assert not installed & (server_only | {"campaign-grpc"}), installed & server_only

    # Run outside the checkout, with nothing of it on the path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (tmp_path / "caller.py").write_text(CALLER)

    def call() -> dict[str, Any]:
        output = run([python, "caller.py", server_address], cwd=tmp_path, env=env, timeout=120)
        return dict(json.loads(output.splitlines()[-1]))

    def importable(module: str) -> bool:
        command = [python, "-c", f"import {module}"]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=60)
        assert done.returncode == 0 or b"ModuleNotFoundError" in done.stderr, done.stderr
        return done.returncode == 0

    answer = call()
    assert answer["snapshot"] == [answer["first"], "STATUS_STOP"]
    ran_id, ran_status, ran_revision = answer["ran"]
    assert [ran_id, ran_status] == [answer["first"], "STATUS_RUN"]
    assert answer["revision"] == ran_revision
    # The watch resumed after the revision it was given: the later change, not the run again.
    resumed_id, resumed_revision, is_change = answer["resumed"]
    assert [resumed_id, is_change] == [answer["second"], True]
    assert resumed_revision > ran_revision
    assert answer["missing"] == ["NOT_FOUND", "CAMPAIGN_NOT_FOUND"]
    # The client retried UNAVAILABLE until the third attempt answered; the plain channel did
    # the same with service_config(); a status without details has empty ones.
    assert answer["by_the_client"] == ["x", 3]
    assert answer["by_the_channel"] == ["y", 3]
    assert answer["bare"] == ["", [], [], {}]
    assert not importable("campaign_grpc")
    assert not importable("campaign")

    # The server's wheel beside it takes the installed client, and its uninstall leaves the
    # client whole.
    run([*pip, server_wheel], timeout=480)
    assert importable("campaign_grpc.ops.server")
    documented = "from campaign_grpc.api.reflection import documented_files as d; assert d()"
    run([python, "-c", documented], cwd=tmp_path, env=env, timeout=60)
    run([python, "-m", "pip", "uninstall", "--yes", "campaign-grpc"], timeout=120)
    assert not importable("campaign_grpc")
    again = call()
    assert again["missing"] == ["NOT_FOUND", "CAMPAIGN_NOT_FOUND"]
    assert again["by_the_client"] == ["x", 3]
