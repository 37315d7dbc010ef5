"""What tracing costs: each unary call's throughput with --tracing on, exporting every span
over OTLP/gRPC to a local receiver, as a ratio of the same call on a server with it off.

    python bench/tracing.py        # part of make bench

Both servers run side by side on fresh SQLite files. One load process per call and round loads
them in turn, half a second at a time (ABBA), so that the machine's speed, which drifts by more
than tracing costs on a shared machine, is the same for both; a call's ratio is the median of
its rounds' ratios. The receiver runs in a process of its own. Target: every ratio >= 0.9.

A second figure, far steadier than throughput on a shared machine: the server process's CPU
time per call (/proc/<pid>/stat, user and system) over the same measured windows, on and off,
and apart that of the exporting process, the traced server's child.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import LABELS, RESULTS, SCENARIOS, compare, free_port, served, versions

HERE = Path(__file__).resolve().parent
TARGET = 0.9
# How long one server is loaded before the other's turn.
SLICE_S = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, str(HERE / "otlp_receiver.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    traced_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "campaign-grpc-bench",
    }
    runs: dict[str, dict[str, list[dict]]] = {"off": {}, "on": {}}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            served(f"sqlite:///{tmp}/off.db", []) as off,
            served(f"sqlite:///{tmp}/on.db", ["--tracing"], env=traced_env) as on,
        ):
            for round_ in range(args.rounds):
                for scenario in SCENARIOS:
                    names = ["off", "on"] if round_ % 2 == 0 else ["on", "off"]
                    servers = [off if name == "off" else on for name in names]
                    slices = max(1, round(args.seconds / SLICE_S))
                    measured = compare(servers, scenario, args.concurrency, args.seconds, slices)
                    for name, result in zip(names, measured, strict=True):
                        runs[name].setdefault(scenario, []).append(result)
    finally:
        receiver.terminate()
        exported, _ = receiver.communicate(timeout=30)

    print(
        f"{'call':<28}{'QPS off':>9}{'QPS on':>9}{'p99 off':>9}{'p99 on':>9}{'ratio':>8}"
        f"{'CPU µs off':>12}{'CPU µs on':>11}{'export':>8}"
    )
    results = {}
    for scenario in SCENARIOS:
        offs, ons = runs["off"][scenario], runs["on"][scenario]
        ratios = [b["qps"] / a["qps"] for a, b in zip(offs, ons, strict=True)]
        results[scenario] = {
            "qps_off": round(statistics.median(r["qps"] for r in offs)),
            "qps_on": round(statistics.median(r["qps"] for r in ons)),
            "p99_ms_off": statistics.median(r["p99_ms"] for r in offs),
            "p99_ms_on": statistics.median(r["p99_ms"] for r in ons),
            "ratio": round(statistics.median(ratios), 3),
            "rounds_ratio": [round(r, 3) for r in ratios],
            "cpu_us_off": round(statistics.median(r["server_cpu_us"] for r in offs), 1),
            "cpu_us_on": round(statistics.median(r["server_cpu_us"] for r in ons), 1),
            "export_cpu_us": round(statistics.median(r["children_cpu_us"] for r in ons), 1),
            "errors": sum(r["errors"] for r in ons),
        }
        r = results[scenario]
        print(
            f"{LABELS[scenario]:<28}{r['qps_off']:>9}{r['qps_on']:>9}"
            f"{r['p99_ms_off']:>9.2f}{r['p99_ms_on']:>9.2f}{r['ratio']:>8.2f}"
            f"{r['cpu_us_off']:>12.0f}{r['cpu_us_on']:>11.0f}{r['export_cpu_us']:>8.0f}"
        )
    print(f"exported: {exported.strip()}; target: every ratio >= {TARGET}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"tracing-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "versions": versions(),
                "concurrency": args.concurrency,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "slice_s": SLICE_S,
                "exported": exported.strip(),
                "results": results,
                "machine_cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
