"""The blocking Python client is the asyncio one's generated twin, and is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_blocking_client_is_current() -> None:
    done = subprocess.run(
        [sys.executable, ROOT / "tools/unasync.py", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_generated_module_says_where_it_comes_from() -> None:
    package = ROOT / "clients/python/src/campaign_grpc_client"
    sources = sorted(p.name for p in (package / "_async").glob("*.py"))
    generated = sorted(p.name for p in (package / "_sync").glob("*.py"))
    assert generated == sources
    for name in generated:
        first = (package / "_sync" / name).read_text().splitlines()[0]
        source = f"clients/python/src/campaign_grpc_client/_async/{name}"
        assert first == f"# Generated from {source}", name
