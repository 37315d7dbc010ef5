"""Hostile peers against the real server and against a bare grpc.aio server, side by side.

    python bench/abuse.py                       # every attack (make bench-abuse)
    python bench/abuse.py --attack ping-flood   # some of them
    python bench/abuse.py --server-only         # skip the bare server
    python bench/abuse.py --through-proxy       # also the server behind deploy/haproxy

For each server, in one run: legit Health/Check and GetCampaign calls from a process of their
own, first idle, then during each attack, each attack from a process of its own (raw HTTP/2
with the h2 library, to 127.0.0.1 only, for a bounded time). Per attack: legit throughput and
p99 against idle, failed legit calls, what the server did to the attacker (GOAWAY, dropped),
and the server's RSS before, at most during, and 10 s after the attacks.
Targets: throughput >= 0.5x idle, p99 <= 5x idle, no failed call, RSS during <= idle + 100 MiB,
RSS 10 s after all attacks within 1.25x of before; every figure at least the bare server's.
The bare server has only the health service: its GetCampaign column is empty.

--through-proxy adds the server behind HAProxy with deploy/haproxy/haproxy.cfg, measured the
same way through the proxy, and gives every call a bearer token (the servers run with
--auth-tokens): the quiet and the noisy customer each their own, the attackers one of theirs.
The attackers then send from 127.0.0.2 (--attacker-source), standing for another host, while
the legit client and the noisy tenant share 127.0.0.1 as tenants behind one gateway do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from common import free_port, rss_bytes, stop  # noqa: E402
from fanout import wait_serving  # noqa: E402

import hostile_peer as hp  # noqa: E402

RESULTS = HERE / "results"
CLI = Path(sys.executable).parent / "campaign-grpc"
PROXY_CONFIG = HERE.parent / "deploy" / "haproxy" / "haproxy.cfg"
# Two customers (ids are canonical UUIDs): one floods, the other is measured.
NOISY, QUIET = "0b5a2c1e-6d1f-4c1a-9a57-2a0d4e9b7a01", "7c3e9f10-1b2d-4e5f-8a9b-0c1d2e3f4a5b"
ATTACKER = "5d7e0c2a-3b4f-4e6a-8c1d-9f0a1b2c3d4e"
# Their bearer tokens, used when ABUSE_AUTH=1 (--through-proxy).
TOKENS = {NOISY: "noisy-" + "1" * 26, QUIET: "quiet-" + "2" * 26, ATTACKER: "attacker-" + "3" * 23}


def auth(customer: str) -> tuple[tuple[str, str], ...]:
    if os.environ.get("ABUSE_AUTH") != "1":
        return ()
    return (("authorization", f"Bearer {TOKENS[customer]}"),)


TARGETS = {"throughput_ratio": 0.5, "p99_ratio": 5.0, "rss_during_mib": 100, "rss_after": 1.25}
# Seconds each attack runs, and the part of it in which the legit client measures.
ATTACK_S, WARMUP_S = 8.0, 2.0
MEASURE_S = 5.0


def watch_request() -> bytes:
    return pb.WatchStatusRequest(customer_id=QUIET).SerializeToString()


def attacks() -> dict[str, Callable[[], hp.Attack]]:
    return {
        "rapid-reset GetCampaign": lambda: hp.rapid_reset(hp.GET_CAMPAIGN),
        "rapid-reset WatchStatus": lambda: hp.rapid_reset(hp.WATCH_STATUS),
        "rapid-reset unknown method": lambda: hp.rapid_reset(hp.UNKNOWN_METHOD),
        "rapid-reset Health/Check": lambda: hp.rapid_reset(hp.HEALTH_CHECK),
        "PING flood": lambda: hp.ping_flood,
        "SETTINGS flood": lambda: hp.settings_flood,
        "WINDOW_UPDATE flood": lambda: hp.window_update_flood,
        "empty DATA flood": hp.empty_data_flood,
        "HPACK bomb": hp.hpack_bomb,
        "5,000 metadata entries": hp.many_metadata,
        "1 MiB metadata value": hp.huge_metadata_value,
        "3,000 silent connections": lambda: hp.silent_connections(3000),
        "3,000 preface-only connections": lambda: hp.preface_only_connections(3000),
        "connection churn": hp.connection_churn,
        "slowloris": hp.slowloris,
        "20,000 half-closed unary": lambda: hp.unanswerable_unary(truncated=False),
        "20,000 truncated unary": lambda: hp.unanswerable_unary(truncated=True),
        "20,000 health watches": lambda: hp.health_watches(20_000),
        "stalled watchers": lambda: hp.stalled_watcher(watch_request()),
        "noisy tenant": lambda: noisy_tenant,
    }


def noisy_tenant(port: int, seconds: float) -> hp.Outcome:
    """Valid GetCampaign calls of one customer from 20 connections, 20 at a time on each."""

    async def flood() -> hp.Outcome:
        result = hp.Outcome()
        channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(20)
        ]
        deadline = time.monotonic() + seconds
        request = pb.GetCampaignRequest(customer_id=NOISY, id=os.environ["NOISY_CAMPAIGN"])

        async def loop(stub: campaign_pb2_grpc.CampaignServiceStub) -> None:
            while time.monotonic() < deadline:
                try:
                    await stub.GetCampaign(request, metadata=auth(NOISY), timeout=5)
                    result.responses += 1
                except grpc.aio.AioRpcError:
                    result.refused_streams += 1

        stubs = [campaign_pb2_grpc.CampaignServiceStub(c) for c in channels]
        await asyncio.gather(*(loop(s) for s in stubs for _ in range(20)))
        result.connections = len(channels)
        for c in channels:
            await c.close()
        return result

    return asyncio.run(flood())


# -- processes ------------------------------------------------------------------------------


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield proc
    finally:
        stop(proc)


def this_script(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


async def serve_bare(port: int) -> None:
    """grpc.aio.server() with default options and only the health service."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def campaign_of(customer: str) -> pb.Campaign:
    campaign = pb.Campaign(
        customer_id=customer,
        type=pb.Campaign.TYPE_CALL,
        name="abuse bench",
        outplan_id=str(uuid.uuid4()),
        outdial_id=str(uuid.uuid4()),
        actions=[pb.Action(type="answer"), pb.Action(type="talk")],
    )
    campaign.actions[1].option.update({"text": "hello"})
    return campaign


async def seed(port: int) -> dict[str, str]:
    """A campaign of each customer, to read; returns their ids."""
    ids = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        for customer in (NOISY, QUIET):
            created = await stub.CreateCampaign(
                pb.CreateCampaignRequest(campaign=campaign_of(customer)),
                metadata=auth(customer),
                timeout=10,
            )
            ids[customer] = created.campaign.id
    return ids


async def legit(port: int, seconds: float, campaign_id: str) -> dict[str, Any]:
    """Health/Check and GetCampaign, each one call at a time, on a connection of its own."""
    deadline = time.monotonic() + seconds

    async def loop(name: str) -> dict[str, Any]:
        latencies: list[float] = []
        failed: list[str] = []
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            health_stub = health_pb2_grpc.HealthStub(channel)
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    if name == "health":
                        await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    else:
                        await stub.GetCampaign(
                            pb.GetCampaignRequest(customer_id=QUIET, id=campaign_id),
                            metadata=auth(QUIET),
                            timeout=2,
                        )
                    latencies.append(time.perf_counter() - start)
                except grpc.aio.AioRpcError as err:
                    failed.append(err.code().name)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0
        return {"per_s": len(latencies) / seconds, "p99_ms": p99 * 1000, "failed": failed}

    names = ["health"] + (["get"] if campaign_id else [])
    results = await asyncio.gather(*(loop(n) for n in names))
    return dict(zip(names, results, strict=True))


def run_legit(port: int, seconds: float, campaign_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        this_script("--legit", str(port), str(seconds), campaign_id),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )


def measure_attack(
    name: str, port: int, pid: int, campaign_ids: dict[str, str], writer: Callable[[], None]
) -> dict[str, Any]:
    env = {"NOISY_CAMPAIGN": campaign_ids.get(NOISY, "")}
    start_rss = peak = rss_bytes(pid)
    with process(this_script("--attack", name, str(port), str(ATTACK_S)), env) as attacker:
        start = time.monotonic()
        while time.monotonic() - start < WARMUP_S:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.1)
        client = run_legit(port, MEASURE_S, campaign_ids.get(QUIET, ""))
        while client.poll() is None:
            peak = max(peak, rss_bytes(pid))
            writer()
            time.sleep(0.1)
        out, _ = attacker.communicate(timeout=ATTACK_S + 120)
        client_out = client.stdout.read() if client.stdout else ""
    outcome = json.loads(out) if out.strip() else {}
    return {
        "legit": json.loads(client_out),
        "attacker": outcome,
        "rss_start": start_rss,
        "rss_peak": peak,
    }


@contextlib.contextmanager
def proxy_in_front(server_port: int) -> Iterator[int]:
    """HAProxy with the shipped configuration in front of the server; yields its port."""
    port = free_port()
    env = {
        "CAMPAIGN_GRPC_PROXY_LISTEN": f"127.0.0.1:{port}",
        "CAMPAIGN_GRPC_SERVER": f"127.0.0.1:{server_port}",
    }
    with process(["haproxy", "-f", str(PROXY_CONFIG)], env):
        yield port


def bench_server(
    label: str,
    command: Callable[[int], list[str]],
    chosen: list[str],
    seeded: bool,
    proxied: bool = False,
) -> dict[str, Any]:
    server_port = free_port()
    with process(command(server_port)) as srv, contextlib.ExitStack() as stack:
        asyncio.run(wait_serving(f"127.0.0.1:{server_port}"))
        port = stack.enter_context(proxy_in_front(server_port)) if proxied else server_port
        asyncio.run(wait_serving(f"127.0.0.1:{port}"))
        ids = asyncio.run(seed(port)) if seeded else {}
        writes = Writes(port, ids.get(QUIET, "")) if seeded else None
        # The legit client runs once before the figures count: channels, caches, the JIT-less
        # warm-up of a first call.
        run_legit(port, 1.0, ids.get(QUIET, "")).wait()
        rss_before = rss_bytes(srv.pid)
        idle_proc = run_legit(port, MEASURE_S, ids.get(QUIET, ""))
        idle = json.loads(idle_proc.communicate()[0])
        rss_idle = rss_bytes(srv.pid)
        rows = {}
        for name in chosen:
            if srv.poll() is not None:
                rows[name] = {"server_exited": srv.returncode}
                continue
            rows[name] = measure_attack(
                name, port, srv.pid, ids, writes.step if writes else (lambda: None)
            )
            print(f"  {label}: {name} done", flush=True)
        time.sleep(10)
        rss_after = rss_bytes(srv.pid) if srv.poll() is None else 0
        if writes:
            writes.close()
    return {
        "idle": idle,
        "rss_before": rss_before,
        "rss_idle": rss_idle,
        "rss_after": rss_after,
        "attacks": rows,
    }


class Writes:
    """Status changes written every half second while attacks run, so that watch streams,
    the stalled ones among them, have changes to be sent."""

    def __init__(self, port: int, campaign_id: str) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stub = campaign_pb2_grpc.CampaignServiceStub(self._channel)
        self._id = campaign_id
        self._last = 0.0
        self._run = True

    def step(self) -> None:
        if time.monotonic() - self._last < 0.5:
            return
        self._last = time.monotonic()
        status = pb.Campaign.STATUS_RUN if self._run else pb.Campaign.STATUS_STOP
        with contextlib.suppress(grpc.RpcError):
            self._stub.UpdateCampaignStatus(
                pb.UpdateCampaignStatusRequest(
                    customer_id=QUIET, id=self._id, status=status, force=True
                ),
                metadata=auth(QUIET),
                timeout=5,
            )
        self._run = not self._run

    def close(self) -> None:
        self._channel.close()


# -- report ---------------------------------------------------------------------------------


def ratio(value: float, base: float) -> float:
    return value / base if base else 0.0


def print_table(results: dict[str, dict[str, Any]]) -> None:
    mib = 1024 * 1024
    print()
    print(
        "| attack | server | Check /s (x idle) | Check p99 (x idle) | GetCampaign /s (x idle) "
        "| GetCampaign p99 (x idle) | failed legit calls | attacker: connections, closed "
        "(GOAWAY codes; dropped; no longer read), frames sent "
        "| RSS MiB at start -> peak (peak - idle) |"
    )
    print("| --- " * 9 + "|")
    for label, result in results.items():
        idle = result["idle"]
        print(
            f"| idle | {label} | {idle['health']['per_s']:.0f} | {idle['health']['p99_ms']:.1f} ms "
            f"| {_get(idle, 'per_s', '{:.0f}')} | {_get(idle, 'p99_ms', '{:.1f} ms')} "
            f"| {_failed(idle)} | | {result['rss_idle'] / mib:.0f} |"
        )
    names = list(next(iter(results.values()))["attacks"])
    for name in names:
        for label, result in results.items():
            row = result["attacks"].get(name)
            if row is None:
                continue
            if "server_exited" in row:
                print(f"| {name} | {label} | server exited ({row['server_exited']}) |" + " |" * 6)
                continue
            idle, during = result["idle"], row["legit"]
            attacker = row["attacker"]
            goaways = attacker.get("goaways", {})
            print(
                f"| {name} | {label} "
                f"| {during['health']['per_s']:.0f} "
                f"({ratio(during['health']['per_s'], idle['health']['per_s']):.2f}) "
                f"| {ratio(during['health']['p99_ms'], idle['health']['p99_ms']):.1f} "
                f"| {_ratio(during, idle, 'per_s')} | {_ratio(during, idle, 'p99_ms')} "
                f"| {_failed(during)} "
                f"| {attacker.get('connections', 0)}, {attacker.get('closed', 0)} "
                f"({','.join(f'{k}x{v}' for k, v in goaways.items()) or '-'}; "
                f"{attacker.get('dropped', 0)} dropped; {attacker.get('throttled', 0)} unread), "
                f"{attacker.get('frames_sent', 0)} frames "
                f"| {row['rss_start'] / mib:.0f} -> {row['rss_peak'] / mib:.0f} "
                f"({(row['rss_peak'] - result['rss_idle']) / mib:+.0f}) |"
            )
    print()
    for label, result in results.items():
        before, after = result["rss_before"], result["rss_after"]
        print(
            f"{label}: RSS before {before / mib:.0f} MiB, idle {result['rss_idle'] / mib:.0f} MiB, "
            f"10 s after the attacks {after / mib:.0f} MiB ({ratio(after, before):.2f}x before)"
        )


def _get(legit: dict[str, Any], key: str, fmt: str) -> str:
    return fmt.format(legit["get"][key]) if "get" in legit else "-"


def _ratio(during: dict[str, Any], idle: dict[str, Any], key: str) -> str:
    if "get" not in during:
        return "-"
    value = during["get"][key]
    shown = f"{value:.0f}" if key == "per_s" else f"{value:.1f} ms"
    return f"{shown} ({ratio(value, idle['get'][key]):.2f})"


def _failed(legit: dict[str, Any]) -> str:
    failed = [code for part in legit.values() for code in part["failed"]]
    if not failed:
        return "0"
    counts: dict[str, int] = {}
    for code in failed:
        counts[code] = counts.get(code, 0) + 1
    return ", ".join(f"{n} {code}" for code, n in counts.items())


def outcome_json(outcome: hp.Outcome) -> str:
    return json.dumps(
        {
            "connections": outcome.connections,
            "closed": outcome.closed,
            "goaways": {str(k): v for k, v in outcome.goaways.items()},
            "dropped": outcome.dropped,
            "throttled": outcome.throttled,
            "refused_streams": outcome.refused_streams,
            "responses": outcome.responses,
            "frames_sent": outcome.frames_sent,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attack", action="append", default=[], help="attack name (repeatable)")
    parser.add_argument("--server-only", action="store_true", help="skip the bare grpc.aio server")
    parser.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    parser.add_argument(
        "--attacker-nice", type=int, default=19, help="niceness of the attacking processes"
    )
    parser.add_argument(
        "--through-proxy",
        action="store_true",
        help="also the server behind HAProxy (deploy/haproxy/haproxy.cfg), with tokens",
    )
    parser.add_argument(
        "--attacker-source",
        help="local address the attackers send from (127.0.0.2 with --through-proxy)",
    )
    parser.add_argument("--legit", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.legit:
        port, seconds, campaign_id = args.legit
        print(json.dumps(asyncio.run(legit(int(port), float(seconds), campaign_id))))
        return
    if args.serve_bare:
        asyncio.run(serve_bare(args.serve_bare))
        return
    os.environ["ATTACKER_NICE"] = str(args.attacker_nice)
    source = args.attacker_source or ("127.0.0.2" if args.through_proxy else None)
    if source:
        os.environ["HOSTILE_SOURCE"] = source
    if args.through_proxy:
        # Every process started from here on (legit client, attackers) sends its token.
        os.environ["ABUSE_AUTH"] = "1"
        os.environ["HOSTILE_TOKEN"] = TOKENS[ATTACKER]
    every = attacks()
    if args.attack and rest[:2] and rest[0].isdigit():
        # An attacker process: --attack NAME PORT SECONDS.
        (name,) = args.attack
        port, seconds = int(rest[0]), float(rest[1])
        # The attacker's CPU stands for a machine elsewhere: on these shared cores it gets the
        # cycles the server and the legit client leave (--attacker-nice 0: as many as they).
        os.nice(int(os.environ.get("ATTACKER_NICE", "19")))
        print(outcome_json(every[name]()(port, seconds)))
        return
    chosen = [
        n for n in every if not args.attack or any(a.lower() in n.lower() for a in args.attack)
    ]
    print(
        f"{len(chosen)} attacks, {ATTACK_S:.0f} s each, attackers at nice {args.attacker_nice}"
        f"{f' from {source}' if source else ''}; load average {os.getloadavg()}"
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.txt"
        tokens.write_text(
            "".join(
                f"{hashlib.sha256(token.encode()).hexdigest()} {customer}\n"
                for customer, token in TOKENS.items()
            )
        )
        serve = [
            str(CLI),
            "serve",
            "--database-url",
            f"sqlite:///{Path(tmp) / 'campaigns.db'}",
            "--log-level",
            "WARNING",
            *(["--auth-tokens", str(tokens)] if args.through_proxy else []),
            *args.server_arg,
        ]
        if args.through_proxy:
            results["campaign-grpc behind haproxy"] = bench_server(
                "campaign-grpc behind haproxy",
                lambda port: [*serve, "--listen", f"127.0.0.1:{port}"],
                chosen,
                seeded=True,
                proxied=True,
            )
        results["campaign-grpc"] = bench_server(
            "campaign-grpc",
            lambda port: [*serve, "--listen", f"127.0.0.1:{port}"],
            chosen,
            seeded=True,
        )
    if not args.server_only:
        results["bare grpc.aio"] = bench_server(
            "bare grpc.aio", lambda port: this_script("--serve-bare", str(port)), chosen, False
        )
    print_table(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"abuse-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
