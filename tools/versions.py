"""One version for the contract and every package, set in VERSION and nowhere else by hand.

Each package's manifest must carry it, since each language's tools read their own file:

    python tools/versions.py            # lists the version of each manifest
    python tools/versions.py --check    # fails unless every manifest has VERSION's version
    python tools/versions.py --write    # writes VERSION's version into every manifest

A release changes VERSION, runs --write, moves CHANGELOG.md's Unreleased entries under it,
then `make dist`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION_FILE = ROOT / "VERSION"
CHANGELOG = ROOT / "CHANGELOG.md"
SEMVER = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?")


@dataclass(frozen=True)
class Manifest:
    """A file that states the version, and the pattern whose group 2 is it."""

    path: str
    pattern: re.Pattern[str]
    # What in the file it is, when not the file's own version.
    what: str = ""

    def read(self) -> str | None:
        file = ROOT / self.path
        if not file.exists():
            return None
        match = self.pattern.search(file.read_text())
        return match.group(2) if match else ""

    def write(self, version: str) -> None:
        file = ROOT / self.path
        text, count = self.pattern.subn(
            lambda m: f"{m.group(1)}{version}{m.group(3)}", file.read_text(), count=1
        )
        if count != 1:
            raise SystemExit(f"{self.path}: no version found to replace")
        file.write_text(text)


MANIFESTS = (
    # The server's distribution and the Python client's: [project] version.
    Manifest("pyproject.toml", re.compile(r'(?m)(^version = ")([^"]*)(")')),
    Manifest("clients/python/pyproject.toml", re.compile(r'(?m)(^version = ")([^"]*)(")')),
    # The server runs on the client's stubs and methods: it requires the client of its version.
    Manifest(
        "pyproject.toml",
        re.compile(r'(?m)(^    "campaign-grpc-client==)([^"]*)(")'),
        what="requires campaign-grpc-client",
    ),
    # The npm package: its top-level "version".
    Manifest("clients/node/package.json", re.compile(r'(?m)(^  "version": ")([^"]*)(")')),
    # The Maven artifact: the project's own version, the first <version> of the pom.
    Manifest("clients/java/pom.xml", re.compile(r"(<version>)([^<]*)(</version>)")),
    # The Go module is versioned by its tag (clients/go/vX.Y.Z); the constant tells a binary's
    # users which release it was built from.
    Manifest(
        "clients/go/campaignclient/version.go",
        re.compile(r'(?m)(^const Version = ")([^"]*)(")'),
    ),
)


def release_version() -> str:
    version = VERSION_FILE.read_text().strip()
    if not SEMVER.fullmatch(version):
        raise SystemExit(f"VERSION holds {version!r}, not a semantic version")
    return version


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail on any manifest that differs")
    mode.add_argument("--write", action="store_true", help="write VERSION into every manifest")
    args = parser.parse_args(argv)
    version = release_version()
    wrong: list[str] = []
    for manifest in MANIFESTS:
        where = f"{manifest.path} ({manifest.what})" if manifest.what else manifest.path
        found = manifest.read()
        if found is None:
            wrong.append(f"{where}: missing")
            continue
        if args.write and found != version:
            manifest.write(version)
            found = manifest.read()
        if not args.check and not args.write:
            print(f"{where}: {found}")
        if found != version:
            wrong.append(f"{where}: {found or 'no version'}, VERSION says {version}")
    if f"\n## [{version}] - " not in CHANGELOG.read_text():
        wrong.append(f"CHANGELOG.md: no section `## [{version}] - <date>`")
    if wrong and (args.check or args.write):
        print("\n".join(wrong), file=sys.stderr)
        print("run `python tools/versions.py --write`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
