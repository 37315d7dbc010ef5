"""Server settings: each one a command-line flag with an environment-variable twin."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "CAMPAIGN_GRPC_"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _setting(default: Any, help: str, parse: Callable[[str], Any] = str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse, **extra})


@dataclass(frozen=True)
class Settings:
    listen: str = _setting(
        "127.0.0.1:50051", "address to serve on (port 0 picks a free one)", metavar="HOST:PORT"
    )
    database_url: str = _setting(
        "sqlite:///campaigns.db", "where campaigns live: sqlite:///FILE", metavar="URL"
    )
    stop_grace: float = _setting(
        60.0, "seconds a campaign may stay STOPPING before it becomes STOP by itself", _positive
    )
    heartbeat_interval: float = _setting(
        10.0, "seconds between WatchStatus heartbeats while nothing changes", _positive
    )
    shutdown_grace: float = _setting(
        10.0, "seconds in-flight calls get to finish on SIGTERM or SIGINT", _positive
    )
    watch_buffer: int = _setting(
        1024, "events a WatchStatus stream may fall behind before it is ended", _count
    )
    read_threads: int = _setting(4, "threads serving database reads", _count)
    sqlite_synchronous: str = _setting(
        "FULL", "SQLite's synchronous pragma (FULL survives power loss)", choices=("FULL", "NORMAL")
    )
    health_interval: float = _setting(
        2.0, "seconds between database checks that drive the health status", _positive
    )
    event_poll_interval: float = _setting(
        0.5, "seconds between looks for events written by other processes", _positive
    )
    log_format: str = _setting("plain", "log line format", choices=("plain", "json"))
    log_level: str = _setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


_METAVARS: dict[Callable[[str], Any], str] = {_positive: "SECONDS", _count: "N", str: "VALUE"}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in fields(Settings):
        env = env_name(f.name)
        parse = f.metadata["parse"]
        default = os.environ.get(env)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=parse,
            default=f.default if default is None else parse(default),
            choices=f.metadata.get("choices"),
            metavar=None
            if f.metadata.get("choices")
            else f.metadata.get("metavar", _METAVARS[parse]),
            help=f"{f.metadata['help']} [env {env}; default: %(default)s]",
        )


def from_namespace(ns: argparse.Namespace) -> Settings:
    return Settings(**{f.name: getattr(ns, f.name) for f in fields(Settings)})


def parse(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(list(argv)))
