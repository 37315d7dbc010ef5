"""What each setting's text must be: the parsers of the flags and their environment twins."""

from __future__ import annotations

import argparse


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


# A default client receives 4 MiB at most: the largest page stays well under it, with room
# for one campaign of a page being larger than the rest.
MAX_LIST_PAGE_BYTES = 3 * 1024 * 1024
MIN_LIST_PAGE_BYTES = 64 * 1024


def _page_bytes(text: str) -> int:
    value = int(text)
    if not MIN_LIST_PAGE_BYTES <= value <= MAX_LIST_PAGE_BYTES:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_LIST_PAGE_BYTES} and {MAX_LIST_PAGE_BYTES}, got {text}"
        )
    return value


_SWITCH_VALUES = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def _switch(text: str) -> bool:
    try:
        return _SWITCH_VALUES[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}") from None


def split_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as (host, port); ValueError when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _address(text: str) -> str:
    if text:
        try:
            split_address(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text
