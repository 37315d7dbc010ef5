"""The container image (Dockerfile), built by `make image` and run by podman as an operator runs
it: on SQLite in a volume, and on PostgreSQL.

Slow: the first build makes a Debian base with mmdebstrap and installs the server with pip (four
to eight minutes, most of it downloading); later ones reuse build/image and podman's cache (20 s,
a minute and a half after a change of the sources). The containers share the host's
network (--network=host) and serve on a free loopback port, so the image's default command runs
with no option but the environment's. Needs podman, runc and mmdebstrap from Debian, as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from campaign_grpc_client.v1 import campaign_pb2_grpc
from e2e_helpers import create, free_port, get, wait_serving
from factories import runnable_campaign
from toolchains import BUILD, ROOT, missing_commands, require, run

# The first test to run builds the image within its time.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1320)]

IMAGE = f"campaign-grpc:{(ROOT / 'VERSION').read_text().strip()}"
# The image's data directory and its user (the Dockerfile's).
DATA = "/var/lib/campaign-grpc"
UID = 10001
# As the Makefile runs podman: runc, cgroupfs and no default ulimits (its containers.conf).
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(BUILD / "image" / "containers.conf")}
# What `podman stop` gives the server after SIGTERM before it kills it: more than the server's
# --shutdown-grace (10 s), as Kubernetes' 30 s grace period does.
STOP_TIMEOUT = 30


def podman_may_fail(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args],
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def podman(*args: str, timeout: float = 60) -> str:
    """podman's output; a failure of the test when it fails."""
    done = podman_may_fail(*args, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image of this checkout: `make image` builds it, or finds podman's cache current."""
    missing = missing_commands("podman", "runc", "mmdebstrap")
    if os.geteuid() != 0:
        missing.append("root (mmdebstrap and podman build as root)")
    require(missing, "podman runc mmdebstrap (apt-get install podman runc mmdebstrap)")
    run(["make", "--no-print-directory", "image"], timeout=1200)
    return IMAGE


@dataclass
class Container:
    name: str
    target: str

    def logs(self) -> str:
        done = podman_may_fail("logs", self.name)
        return done.stdout + done.stderr

    def stop(self) -> tuple[int, float]:
        """Stops it as Kubernetes does (SIGTERM, the image's STOPSIGNAL); its exit code and how
        long it took. A server still up after STOP_TIMEOUT is killed (exit code 137)."""
        started = time.monotonic()
        podman("stop", "--time", str(STOP_TIMEOUT), self.name, timeout=STOP_TIMEOUT + 30)
        took = time.monotonic() - started
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name)), took


@contextmanager
def container(image: str, *options: str) -> Iterator[Container]:
    """The image's default command in a container of its own on a free loopback port, removed
    at the end whatever happened."""
    port = free_port()
    name = f"campaign-grpc-test-{uuid.uuid4().hex[:12]}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network=host",
        "--env",
        f"CAMPAIGN_GRPC_LISTEN=127.0.0.1:{port}",
        *options,
        image,
    )
    try:
        yield Container(name, f"127.0.0.1:{port}")
    finally:
        podman_may_fail("rm", "--force", "--volumes", "--time", "0", name)


@asynccontextmanager
async def serving(box: Container) -> AsyncIterator[campaign_pb2_grpc.CampaignServiceStub]:
    """A stub of the container's server, once it answers SERVING."""
    try:
        await wait_serving(box.target, within=60)
    except AssertionError as e:
        pytest.fail(f"{e}\nthe container's log:\n{box.logs()}")
    async with grpc.aio.insecure_channel(box.target) as channel:
        yield campaign_pb2_grpc.CampaignServiceStub(channel)


def assert_stopped_gracefully(box: Container) -> None:
    code, took = box.stop()
    log = box.logs()
    assert code == 0, f"exit code {code} after SIGTERM ({took:.1f} s):\n{log}"
    assert "shutting down" in log, log
    assert log.rstrip().endswith("stopped"), log
    assert took < STOP_TIMEOUT, took


async def test_a_campaign_on_sqlite_in_a_volume_outlives_its_container(
    image: str, tmp_path: Path, customer: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    volume = f"--volume={data}:{DATA}"

    with container(image, volume) as first:
        async with serving(first) as stub:
            created = await create(stub, runnable_campaign(customer))
        assert_stopped_gracefully(first)
    # The image's default database: a file in the volume, the server's user's own.
    assert (data / "campaigns.db").stat().st_uid == UID

    with container(image, volume) as second:
        async with serving(second) as stub:
            assert await get(stub, customer, created.id) == created
        assert_stopped_gracefully(second)


async def test_it_serves_from_postgresql(image: str, postgres_url: str, customer: str) -> None:
    with container(image, f"--env=CAMPAIGN_GRPC_DATABASE_URL={postgres_url}") as box:
        async with serving(box) as stub:
            created = await create(stub, runnable_campaign(customer))
            assert await get(stub, customer, created.id) == created
        assert "database postgresql" in box.logs()
        assert_stopped_gracefully(box)


async def test_it_runs_as_a_user_of_its_own_and_has_no_healthcheck(image: str) -> None:
    # No volume given: podman makes one for the image's VOLUME, owned as the image has it.
    with container(image) as box:
        async with serving(box):
            # The server is the container's first process (the command in exec form).
            status = podman("exec", box.name, "cat", "/proc/1/status")
            assert f"\nUid:\t{UID}\t{UID}\t{UID}\t{UID}\n" in status, status
            assert "campaign-grpc" in podman("exec", box.name, "cat", "/proc/1/cmdline")
        # Kubernetes' gRPC probes check health; a HEALTHCHECK would run beside them.
        config = json.loads(podman("image", "inspect", image))[0]
        assert config["Config"]["User"] == f"{UID}:{UID}"
        # Where podman shows a HEALTHCHECK of a Docker-format image (`make image` builds one).
        assert config["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert config.get("Healthcheck") is None
