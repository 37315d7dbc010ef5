"""Each setting as a command-line flag with an environment-variable twin."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import fields
from typing import Any

from ._fields import Settings
from ._parsers import _address, _count, _non_negative, _page_bytes, _positive, _switch

ENV_PREFIX = "CAMPAIGN_GRPC_"


def shown(value: object) -> str:
    """A setting's value as a user writes it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "by database"
    return str(value) if value != "" else "off"


_METAVARS: dict[Callable[[str], Any], str] = {
    _positive: "SECONDS",
    _non_negative: "SECONDS",
    _count: "N",
    _page_bytes: "BYTES",
    str: "VALUE",
    _address: "HOST:PORT",
    _switch: "on|off",
}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


class _FromEnv(str):
    """A setting's text taken from its environment variable, so that errors can name it."""

    env: str


def _converter(parse: Callable[[str], Any], choices: Sequence[str] | None) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        source = f" (from {text.env})" if isinstance(text, _FromEnv) else ""
        # argparse checks choices for flags, but not for a default taken from the environment.
        if choices is not None and source and text not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice {str(text)!r}{source}; choose from {', '.join(choices)}"
            )
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc}{source}") from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {str(text)!r}{source}") from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_arguments(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """Adds a flag per setting (or per setting named in only), each defaulting to its env twin."""
    for f in fields(Settings):
        if only is not None and f.name not in only:
            continue
        env = env_name(f.name)
        parse = f.metadata["parse"]
        choices = f.metadata.get("choices")
        text = os.environ.get(env)
        # argparse converts a string default only when the flag is absent: a flag wins, and a
        # bad variable is reported as a usage error that names it.
        default: Any = f.default
        if text is not None:
            default = _FromEnv(text)
            default.env = env
        switch = {k: f.metadata[k] for k in ("nargs", "const") if k in f.metadata}
        default_text = (
            shown(default)
            if isinstance(default, bool) or default == "" or default is None
            else "%(default)s"
        )
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_converter(parse, choices),
            default=default,
            choices=choices,
            metavar=None if choices else f.metadata.get("metavar", _METAVARS[parse]),
            help=f"{f.metadata['help']} [env {env}; default: {default_text}]",
            **switch,
        )
        if switch and f.default is True:
            # A switch that is on by default is turned off as users of other servers expect.
            parser.add_argument(
                "--no-" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_false",
                help=f"--{f.name.replace('_', '-')} off",
            )


def from_namespace(ns: argparse.Namespace) -> Settings:
    """Settings from parsed flags; a setting that has no flag keeps its default."""
    values = {f.name: getattr(ns, f.name) for f in fields(Settings) if hasattr(ns, f.name)}
    return Settings(**values)


def parse(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(list(argv)))
