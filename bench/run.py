"""The unary benchmark: the real server in one process, load from another, ratios to Health/Check.

    python bench/run.py                 # quick: a few seconds per call (make bench)
    BENCH_MODE=full python bench/run.py # longer runs, and the 1,000,000-campaign scale run

Every figure is also given as a ratio to grpc.health.v1.Health/Check measured on the same
server in the same run: the transport's own ceiling on this machine at this moment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from common import free_port, stop
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SCENARIOS = ["health", "get", "list", "create", "update", "status"]
LABELS = {
    "health": "Health/Check (baseline)",
    "create": "CreateCampaign",
    "get": "GetCampaign",
    "list": "ListCampaigns (50)",
    "update": "UpdateCampaign",
    "status": "UpdateCampaignStatus",
}
TARGETS = {"get": 0.8, "create": 0.5, "update": 0.5, "status": 0.5, "list": 0.3}


def wait_serving(target: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise RuntimeError(f"server at {target} did not become SERVING")


@contextlib.contextmanager
def server(database_url: str, extra: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    with served(database_url, extra, env) as (target, _):
        yield target


@contextlib.contextmanager
def served(
    database_url: str, extra: list[str], env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """The server, as its address and its process id (whose CPU time load() can measure)."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "campaign_grpc.cli",
        "serve",
        "--listen",
        target,
        "--database-url",
        database_url,
        *extra,
    ]
    log = open(Path(tempfile.gettempdir()) / f"campaign-bench-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stderr=log, stdout=log, env={**os.environ, **(env or {})})
    try:
        wait_serving(target)
        yield target, proc.pid
    finally:
        stop(proc)
        log.close()


def load(
    target: str, scenario: str, concurrency: int, seconds: float, pid: int | None = None
) -> dict:
    """One load run; with pid, also the CPU per call of that server process (and apart, of
    its children) while it was measured."""
    return _load([target], [pid], scenario, concurrency, seconds, 1)


def compare(
    servers: list[tuple[str, int]], scenario: str, concurrency: int, seconds: float, slices: int
) -> list[dict]:
    """One load run against each server, by the same load process, in slices taken in turn;
    each with its server's CPU per call."""
    targets, pids = [t for t, _ in servers], [p for _, p in servers]
    return _load(targets, pids, scenario, concurrency, seconds, slices)


def _load(
    targets: list[str],
    pids: list[int | None],
    scenario: str,
    concurrency: int,
    seconds: float,
    slices: int,
) -> Any:
    command = [sys.executable, str(HERE / "load.py"), "--scenario", scenario]
    command += ["--concurrency", str(concurrency), "--seconds", str(seconds)]
    command += ["--slices", str(slices)]
    for target, pid in zip(targets, pids, strict=True):
        command += ["--target", target, *(["--server-pid", str(pid)] if pid is not None else [])]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        timeout=len(targets) * (seconds * 10 + 120),
    )
    return json.loads(out.stdout)


def versions() -> dict[str, str]:
    names = ["grpcio", "protobuf", "peewee", "campaign-grpc"]
    found = {n: metadata.version(n) for n in names}
    found["python"] = platform.python_version()
    found["sqlite"] = sqlite3.sqlite_version
    found["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    return found


def unary(concurrency: int, seconds: float, rounds: int, extra: list[str]) -> dict:
    """Every call in turn, round after round; each figure is the median of its rounds.

    Interleaving the baseline with the calls it is compared to, on the same server, keeps
    the ratios steady on a machine whose speed drifts under other load.
    """
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        runs: dict[str, list[dict]] = {s: [] for s in SCENARIOS}
        with server(url, extra) as target:
            for _ in range(rounds):
                for scenario in SCENARIOS:
                    runs[scenario].append(load(target, scenario, concurrency, seconds))
    base_qps = statistics.median(r["qps"] for r in runs["health"])
    results: dict[str, dict] = {}
    for scenario, measured in runs.items():
        results[scenario] = {
            "qps": statistics.median(r["qps"] for r in measured),
            "p50_ms": statistics.median(r["p50_ms"] for r in measured),
            "p99_ms": statistics.median(r["p99_ms"] for r in measured),
            "errors": sum(r["errors"] for r in measured),
            "calls": sum(r["calls"] for r in measured),
            "ratio": statistics.median(r["qps"] for r in measured) / base_qps,
            "rounds_qps": [round(r["qps"]) for r in measured],
        }
    return results


def print_unary(results: dict) -> None:
    print(f"{'call':<28}{'QPS':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}{'target':>8}{'errors':>8}")
    for scenario in SCENARIOS:
        r = results[scenario]
        target = TARGETS.get(scenario)
        print(
            f"{LABELS[scenario]:<28}{r['qps']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['ratio']:>8.2f}{(f'>={target}' if target else ''):>8}{r['errors']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode", default=os.environ.get("BENCH_MODE", "quick"), choices=("quick", "full")
    )
    parser.add_argument(
        "--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "16"))
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="per call and round (quick 3, full 8)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds over every call (quick 5, full 7)"
    )
    parser.add_argument(
        "--scale", type=int, default=None, help="campaigns for the scale run (full: 1000000)"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra flag for the server"
    )
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.mode == "quick" else 8.0)
    rounds = args.rounds or (5 if args.mode == "quick" else 7)
    scale = args.scale if args.scale is not None else (1_000_000 if args.mode == "full" else 0)

    report: dict = {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "seconds": seconds,
        "server_args": args.server_arg,
        "versions": versions(),
    }
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    report["rounds"] = rounds
    print(
        f"mode {args.mode}: concurrency {args.concurrency}, {rounds} rounds of {seconds:.0f} s per "
        f"call, server flags {args.server_arg or 'default'}"
    )
    report["unary"] = unary(args.concurrency, seconds, rounds, args.server_arg)
    print_unary(report["unary"])
    if scale:
        from scale import scale_run

        report["scale"] = scale_run(scale, args.server_arg, server)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"unary-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
