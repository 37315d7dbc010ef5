"""What tracing costs: each unary call's throughput with --tracing on, exporting every span
over OTLP/gRPC to a local receiver, as a ratio of the same call on a server with it off.

    python bench/tracing.py        # part of make bench

Both servers run side by side on fresh SQLite files; their rounds alternate call by call, so
that a drift of the machine's speed falls on both. The receiver runs in a process of its own.
Target: every ratio >= 0.9.
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

from run import LABELS, RESULTS, SCENARIOS, free_port, load, server, versions

HERE = Path(__file__).resolve().parent
TARGET = 0.9


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
            server(f"sqlite:///{tmp}/off.db", []) as off,
            server(f"sqlite:///{tmp}/on.db", ["--tracing"], env=traced_env) as on,
        ):
            for _ in range(args.rounds):
                for scenario in SCENARIOS:
                    for name, target in (("off", off), ("on", on)):
                        measured = load(target, scenario, args.concurrency, args.seconds)
                        runs[name].setdefault(scenario, []).append(measured)
    finally:
        receiver.terminate()
        exported, _ = receiver.communicate(timeout=30)

    print(f"{'call':<28}{'QPS off':>9}{'QPS on':>9}{'p99 off':>9}{'p99 on':>9}{'ratio':>8}")
    results = {}
    for scenario in SCENARIOS:
        off_qps = statistics.median(r["qps"] for r in runs["off"][scenario])
        on_qps = statistics.median(r["qps"] for r in runs["on"][scenario])
        results[scenario] = {
            "qps_off": round(off_qps),
            "qps_on": round(on_qps),
            "p99_ms_off": statistics.median(r["p99_ms"] for r in runs["off"][scenario]),
            "p99_ms_on": statistics.median(r["p99_ms"] for r in runs["on"][scenario]),
            "ratio": round(on_qps / off_qps, 3),
            "errors": sum(r["errors"] for r in runs["on"][scenario]),
        }
        r = results[scenario]
        print(
            f"{LABELS[scenario]:<28}{r['qps_off']:>9}{r['qps_on']:>9}"
            f"{r['p99_ms_off']:>9.2f}{r['p99_ms_on']:>9.2f}{r['ratio']:>8.2f}"
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
