"""The Node.js client test (tests/node/) against a real server: the contract outside Python."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import Process, free_port, wait_serving

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Process]]:
    """`campaign-grpc serve` in a subprocess, on a free port and a fresh database."""
    target = f"127.0.0.1:{free_port()}"
    args = ["--listen", target, "--database-url", f"sqlite:///{tmp_path / 'campaigns.db'}"]
    proc = Process([*args, "--heartbeat-interval", "0.5"], tmp_path / "server.log")
    try:
        yield target, proc
    finally:
        proc.kill()


def test_the_node_client_test_passes_against_a_real_server(server: tuple[str, Process]) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH: install Node.js (it also runs make lint)"
    assert (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
        "the Node.js dependencies are missing: run `make test` (or npm ci)"
    )
    target, proc = server
    asyncio.run(wait_serving(target, proc))

    done = subprocess.run(
        [node, "--test", "tests/node/"],
        cwd=ROOT,
        env={**os.environ, "CAMPAIGN_GRPC_ADDRESS": target},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nserver log:\n{proc.log}"
    assert "# fail 0" in done.stdout
    assert "# pass 0" not in done.stdout, done.stdout
