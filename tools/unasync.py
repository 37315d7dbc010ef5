"""Writes the blocking Python client from the asyncio one: each _async/X.py into _sync/X.py.

    python tools/unasync.py          # write the _sync/ modules (make unasync)
    python tools/unasync.py --check  # exit 1 with a diff where one is not current (make lint)

The asyncio client (clients/python/src/campaign_grpc_client/_async) is the only one written
by hand, and so are the tests of both clients in FILES (on the twins of tests/client_twins.py).
Each source becomes its blocking twin through the substitutions below, applied in order to the
whole text; ruff then sorts the imports, drops the ones left unused (Awaitable, say) and formats
the result as the rest of the code. Where the two clients cannot be one text, the asyncio code
calls an AsyncX of _backends or _silence whose blocking twin X has the same methods.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients/python/src/campaign_grpc_client"
# (source folder, generated folder): each module of the one has its twin in the other.
TREES = [(PACKAGE / "_async", PACKAGE / "_sync")]
# (source, generated) tests of the two clients, the twins of tests/client_twins.py.
FILES = [
    (
        ROOT / f"tests/client/test_{name}_asyncio.py",
        ROOT / f"tests/client/test_{name}_blocking.py",
    )
    for name in ("client_down_then_up", "watch_caller_time", "watch_paused_server")
]

# Texts the asyncio code words its own way: the blocking twin keeps its own docstrings.
TEXTS = [
    (
        '"""AsyncCampaignClient: campaign.v1.CampaignService over a grpc.aio channel."""',
        '"""CampaignClient: campaign.v1.CampaignService over a blocking grpc channel."""',
    ),
    (
        '"""AsyncWatch: the asyncio stream of watch(), which reconnects by itself (see _watch)."""',
        '"""Watch: the blocking stream of watch(), which reconnects by itself (see _watch)."""',
    ),
    (
        "An asyncio client: make it in the event loop, use it with async with, or aclose() it.",
        "A blocking client. Use it as a context manager, or close() it.",
    ),
    (
        '"""The asyncio watch: iterate it with async for; '
        'aclose() (or its async with) stops it."""',
        '"""The sync watch: iterate it; close() (or leave its with block) to stop it.\n\n'
        '    close() may be called from another thread; the iteration then ends.\n    """',
    ),
    # An async generator has no yield from.
    (
        "for campaign in page.campaigns:\n                yield campaign",
        "yield from page.campaigns",
    ),
    # Closing a generator that runs elsewhere: an async one raises RuntimeError, a
    # generator on another thread ValueError.
    (
        "suppress(RuntimeError):  # iterating in another task: it ends by itself",
        "suppress(ValueError):  # iterating on another thread: it ends by itself",
    ),
    (
        '"""The asyncio client, its watch and its retry loop: the source _sync/ is generated from.',
        '"""The blocking client, its watch and its retry loop, generated from _async/.',
    ),
]

# Then every other difference, by rule.
RULES = [
    (r"\bAsyncGenerator\[(\w+), None\]", r"Generator[\1, None, None]"),
    (r"\bAsyncGenerator\b", "Generator"),
    # The asyncio sources use asyncio for nothing but its sleep.
    (r"^import asyncio$", "import time"),
    (r"\basyncio\.sleep\(", "time.sleep("),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAwaitable\[(\w+)\]", r"\1"),
    # Every other AsyncX: AsyncCampaignClient, AsyncWatch, the twins of _backends...
    (r"\bAsync([A-Z]\w*)\b", r"\1"),
    (r"\bcall_async\b", "call"),
    (r"\basync_(\w+)", r"\1"),
    (r"\bgrpc\.aio\.", "grpc."),
    (r"\basync def\b", "def"),
    (r"\basync (with|for)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\b__a(enter|exit|iter|next)__\b", r"__\1__"),
    (r"\baclose\b", "close"),
    (r"\banext\(", "next("),
]


def header(source: Path) -> str:
    return (
        f"# Generated from {source.relative_to(ROOT)}\n"
        "# by tools/unasync.py (`make unasync`): do not edit. Edit the asyncio source and run\n"
        "# it again; `make lint` checks that this file is current.\n"
    )


def unasync(text: str, used: set[str] | None = None) -> str:
    for old, new in TEXTS:
        if used is not None and old in text:
            used.add(old)
        text = text.replace(old, new)
    for pattern, replacement in RULES:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def ruff(text: str, target: Path, *args: str) -> str:
    """text as ruff leaves it, read as target (so the project's settings apply)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(target), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return done.stdout


def generate(source: Path, target: Path, used: set[str] | None = None) -> str:
    text = header(source) + unasync(source.read_text(), used)
    # Imports first (sorted, the unused dropped), then the layout.
    text = ruff(text, target, "check", "--fix", "--exit-zero", "--quiet", "--select", "I,F401")
    return ruff(text, target, "format", "--quiet")


def pairs() -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Every (source, generated) pair, and the generated modules that have no source left."""
    found = list(FILES)
    orphans = []
    for sources, targets in TREES:
        found += [(source, targets / source.name) for source in sorted(sources.glob("*.py"))]
        names = {source.name for source in sources.glob("*.py")}
        orphans += [t for t in sorted(targets.glob("*.py")) if t.name not in names]
    return found, orphans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which are not current")
    check = parser.parse_args().check
    found, orphans = pairs()
    stale = len(orphans)
    for orphan in orphans:
        print(f"{orphan.relative_to(ROOT)}: its source is gone")
        if not check:
            orphan.unlink()
    used: set[str] = set()
    for source, target in found:
        text = generate(source, target, used)
        current = target.read_text() if target.exists() else ""
        if current == text:
            continue
        stale += 1
        rel = target.relative_to(ROOT)
        if check:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{rel} (as it is)",
                f"{rel} (as generated)",
            )
            sys.stdout.writelines(diff)
        else:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text)
            print(f"wrote {rel}")
    # A text edited in the source would otherwise slip through in its asyncio wording.
    for old, _ in TEXTS:
        if old not in used:
            print(f"tools/unasync.py: no source has {old!r} any more", file=sys.stderr)
            return 1
    if check and stale:
        print(f"{stale} generated file(s) not current: run `make unasync`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
