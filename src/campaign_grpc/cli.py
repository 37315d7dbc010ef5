"""The campaign-grpc command: serve, migrate and check-config."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import peewee as pw

from . import settings
from .ops import export_config, logs, security
from .settings import Settings
from .storage.connect import UnsupportedDatabase, close_database, open_database
from .storage.schema import (
    SCHEMA_VERSION,
    SchemaNotMigrated,
    SchemaTooNew,
    bind_tables,
    current_version,
)
from .storage.store import Store

PROG = "campaign-grpc"
MIGRATE_SETTINGS = (
    "database_url",
    "sqlite_synchronous",
    "log_format",
    "log_level",
    "log_buffer",
)

DESCRIPTION = "A gRPC service for outbound dialing campaigns (campaign.v1.CampaignService)."
EPILOG = f"""\
Every setting is a flag and an environment variable: {settings.ENV_PREFIX} and the flag's name
in capitals (--stop-grace 30 or {settings.ENV_PREFIX}STOP_GRACE=30). A flag wins over its
variable. `{PROG} COMMAND --help` lists the settings of a command.

examples:
  {PROG} serve --listen 127.0.0.1:50051 --database-url sqlite:///campaigns.db
  {PROG} serve --metrics-listen 127.0.0.1:9464      # Prometheus at /metrics
  {PROG} serve --listen 0.0.0.0:50051 --tls-cert server.pem --tls-key server.key \
      --auth-tokens tokens.txt                       # beyond loopback: TLS and tokens
  {settings.ENV_PREFIX}DATABASE_URL=sqlite:///campaigns.db {PROG} migrate
  {PROG} check-config --database-url sqlite:///campaigns.db
"""


class ConfigError(Exception):
    """Settings that are well-formed one by one but cannot work; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    serve_parser = commands.add_parser(
        "serve",
        help="serve campaign.v1, health and reflection over gRPC",
        description="Serve campaign.v1, health and reflection over gRPC until SIGTERM or "
        "SIGINT. The database schema is created or upgraded first.",
    )
    settings.add_arguments(serve_parser)
    migrate_parser = commands.add_parser(
        "migrate",
        help="create or upgrade the database schema without serving; print its version",
        description="Create or upgrade the database schema, print its version and exit. "
        "Each step of the upgrade is one transaction.",
    )
    settings.add_arguments(migrate_parser, only=MIGRATE_SETTINGS)
    check_parser = commands.add_parser(
        "check-config",
        help="validate the settings and the database; print the effective settings",
        description="Validate every setting (flags and environment) and the database URL, "
        "print the effective settings with where each comes from, and exit 0; exit 1 "
        "with every problem found when something is wrong, settings that contradict each "
        "other (a writes budget larger than the calls', say) included. Warns when serve "
        "would refuse the address: beyond loopback with neither TLS nor tokens, and no "
        "--insecure. "
        "Creates nothing.",
    )
    settings.add_arguments(check_parser)
    return parser


def _version() -> str:
    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _sqlite_path(url: str) -> Path:
    # As open_database reads it: sqlite:///relative/file or sqlite:////absolute/file.
    scheme, sep, path = url.partition(":///")
    if scheme != "sqlite" or not sep or not path:
        raise ConfigError(
            f"--database-url: expected sqlite:///FILE or postgresql://HOST/DATABASE, got {url!r}"
        )
    return Path(path)


def _describe_postgresql(url: str) -> str:
    try:
        db = open_database(url, pool_size=1)
    except UnsupportedDatabase as exc:
        raise ConfigError(f"--database-url: {exc}") from None
    try:
        version = current_version(db, bind_tables(db))
    except pw.DatabaseError as exc:
        raise ConfigError(f"--database-url: PostgreSQL does not answer: {exc}") from None
    finally:
        close_database(db)
    return _describe_version("the PostgreSQL database", version)


def describe_database(url: str) -> str:
    """What the database at url is, without creating or changing anything."""
    if url.startswith(("postgresql://", "postgres://")):
        return _describe_postgresql(url)
    path = _sqlite_path(url)
    if not path.exists():
        existing = next(p for p in path.parents if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"--database-url: {existing} is not a directory")
        return f"{path} does not exist yet; it is created on start"
    if not path.is_file():
        raise ConfigError(f"--database-url: {path} is not a file")
    db = pw.SqliteDatabase(f"file:{path.resolve()}?mode=ro", uri=True)
    try:
        version = current_version(db, bind_tables(db))
    except pw.DatabaseError as exc:
        message = f"--database-url: {path} is not a readable SQLite database: {exc}"
        raise ConfigError(message) from None
    finally:
        db.close()
    return _describe_version(str(path), version)


def _describe_version(what: str, version: int) -> str:
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"--database-url: {what} has schema version {version}, newer than this release "
            f"({SCHEMA_VERSION})"
        )
    if version == 0:
        return f"{what} has no schema yet; it is created on start"
    if version < SCHEMA_VERSION:
        return (
            f"{what} has schema version {version}; serve or migrate upgrades it to {SCHEMA_VERSION}"
        )
    return f"{what} has schema version {version} (current)"


def _given_as_flags(argv: Sequence[str]) -> set[str]:
    """The settings given as flags after the command (a namespace keeps what it has)."""
    args = list(argv)
    unset = object()
    names = [f.name for f in dataclasses.fields(Settings)]
    namespace = argparse.Namespace(**dict.fromkeys(names, unset))
    parser = argparse.ArgumentParser(add_help=False)
    settings.add_arguments(parser)
    parser.parse_args(args[args.index("check-config") + 1 :], namespace)
    return {name for name in names if getattr(namespace, name) is not unset}


def check_config(config: Settings, argv: Sequence[str]) -> int:
    problems: list[str] = []
    for name in ("listen", "metrics_listen", "health_listen"):
        value = getattr(config, name)
        if value or name == "listen":
            try:
                settings.split_address(value)
            except ValueError as exc:
                problems.append(f"--{name.replace('_', '-')}: {exc}")
    try:
        database = describe_database(config.database_url)
    except ConfigError as exc:
        problems.append(str(exc))
    problems += security.file_problems(config)
    problems += settings.conflicts(config)
    if config.tracing:
        problems += export_config.problems(os.environ)
    if problems:
        for problem in problems:
            print(f"{PROG} check-config: {problem}", file=sys.stderr)
        return 1
    flags = _given_as_flags(argv)
    rows = []
    for f in dataclasses.fields(Settings):
        env = settings.env_name(f.name)
        if f.name in flags:
            source = "flag --" + f.name.replace("_", "-")
        elif env in os.environ:
            source = "env " + env
        else:
            source = "default"
        value = settings.shown(getattr(config, f.name))
        if f.name == "read_threads" and config.read_threads is None:
            value = f"{config.read_thread_count} ({value})"
        rows.append((f.name, value, source))
    name_width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value, source in rows:
        print(f"{name:<{name_width}}  {value:<{value_width}}  ({source})")
    print(f"database: {database}")
    refusal = security.exposure_problem(config)
    if refusal is not None:
        print(f"warning: serve refuses to start: {refusal}")
    print("configuration OK")
    return 0


def migrate(config: Settings) -> int:
    db = open_database(config.database_url, sqlite_synchronous=config.sqlite_synchronous)
    try:
        before = current_version(db, bind_tables(db))
        after = Store(db).migrate()
    finally:
        db.close()
    change = "already current" if before == after else f"upgraded from {before}"
    print(f"database schema version {after} ({change})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(args_list)
    config = settings.from_namespace(args)
    logs.configure(
        config.log_format, config.log_level, traced=config.tracing, buffer=config.log_buffer
    )
    try:
        return _run(args, args_list, config)
    finally:
        logs.close()


def _run(args: argparse.Namespace, args_list: list[str], config: Settings) -> int:
    try:
        if args.command == "serve":
            # grpc is needed only to serve
            from .ops.ports import ListenRefused
            from .ops.server import serve

            if config.tracing and (problems := export_config.problems(os.environ)):
                raise settings.Conflicting(problems)

            try:
                asyncio.run(serve(config))
            except ListenRefused as exc:
                print(f"{PROG} serve: {exc}", file=sys.stderr)
                return 2
        elif args.command == "migrate":
            return migrate(config)
        elif args.command == "check-config":
            return check_config(config, args_list)
    except (security.Refused, settings.Conflicting) as exc:
        for problem in exc.problems:
            print(f"{PROG} {args.command}: {problem}", file=sys.stderr)
        return 2
    except (
        UnsupportedDatabase,
        SchemaTooNew,
        SchemaNotMigrated,
        OSError,
        pw.DatabaseError,
    ) as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
