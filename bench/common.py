"""What the benchmarks that watch a server process share: its memory, percentiles, a free
port, and where their results go."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CLI = Path(sys.executable).parent / "campaign-grpc"


@contextlib.contextmanager
def server_process(port: int, database: Path, args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """`campaign-grpc serve` on 127.0.0.1:port and a SQLite file, logging warnings only;
    stopped with SIGTERM at the end (killed if it takes over 30 s)."""
    proc = subprocess.Popen(
        [
            str(CLI), "serve", "--listen", f"127.0.0.1:{port}",
            "--database-url", f"sqlite:///{database}", "--log-level", "WARNING", *args,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, and SIGKILL if it takes over 30 s; nothing for a process already gone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_results(name: str, targets: dict[str, float], **results: Any) -> Path:
    """bench/results/NAME-TIME.json with the machine, the targets and the results."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    out.write_text(json.dumps({"machine": machine, "targets": targets, **results}, indent=2))
    return out
