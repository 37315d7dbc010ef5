"""The campaign-grpc command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from . import logs, settings
from .server import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign-grpc",
        description="A gRPC service for outbound dialing campaigns.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="serve campaign.v1 over gRPC",
        description="Serve campaign.v1, health and reflection. Every flag can also be set "
        f"by an environment variable ({settings.ENV_PREFIX}<FLAG>).",
    )
    settings.add_arguments(serve_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    config = settings.from_namespace(args)
    logs.configure(config.log_format, config.log_level)
    if args.command == "serve":
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
