"""The sessions of the documentation run as printed, and answer as their comments say.

A session is a ```sh block after `<!-- session -->` in README.md or docs/*.md. Each runs
whole, with bash, against a new `campaign-grpc serve` whose address is CAMPAIGN_GRPC_LISTEN
(the session's default is make run's), with grpcurl, jq and `npx buf` as a reader has them.
The comment lines under a command that start with `#  ` show its reply: each JSON one
must match a document the session printed (its string fields, but those shortened with …), each
other line must be in the output (but the parts left out with …).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from documents import DOCUMENTS
from e2e_helpers import serving
from toolchains import missing_commands, missing_paths, require

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SESSION = re.compile(r"^<!-- session -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def sessions() -> list[Any]:
    found = []
    for path in DOCUMENTS:
        for number, match in enumerate(SESSION.finditer(path.read_text()), 1):
            name = f"{path.relative_to(ROOT)}#{number}"
            found.append(pytest.param(match.group(1), id=name))
    return found


def test_the_sessions_are_found() -> None:
    names = {p.id for p in sessions()}
    assert {"README.md#1", "docs/getting-started.md#1", "docs/getting-started.md#2"} <= names


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    require(missing_paths(BIN / "grpcurl"), "grpcurl: run `make test`, which fetches it")
    require(missing_commands("jq", "npx"), "jq and Node.js (npm)")
    require(missing_paths(ROOT / "node_modules" / ".bin" / "buf"), "buf: run `npm ci`")
    with serving(tmp_path) as target:
        yield target


def run_session(script: str, address: str) -> str:
    """Runs the session as a reader's shell would, stopping at the first failing command; its
    output, stdout and stderr as they came."""
    (ROOT / "build").mkdir(exist_ok=True)
    # Under the repository, so that `npx buf` finds the buf that `npm ci` installed.
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as cwd:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_GRPC_")},
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "CAMPAIGN_GRPC_LISTEN": address,
        }
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=120)
        finally:
            # Whatever the session left running (a watch, should it fail before its kill).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"the session failed ({proc.returncode}):\n{output}"
    return output


def replies(script: str) -> list[str]:
    """The comments that show replies: runs of `#  ` lines, one entry per JSON document (a
    line starting with `{`, with the indented lines after it) or other line."""
    entries: list[str] = []
    continues = False
    for line in script.splitlines():
        if not line.startswith("#  "):
            continues = False
            continue
        text = line[3:]
        if continues and text.startswith(" "):
            entries[-1] += " " + text.strip()
        else:
            entries.append(text.strip())
            continues = text.startswith("{")
    return entries


def documents(output: str) -> list[Any]:
    """Every JSON document the session printed."""
    decoder, found = json.JSONDecoder(), []
    for start in (m.start() for m in re.finditer(r"^\{", output, re.MULTILINE)):
        try:
            found.append(decoder.raw_decode(output, start)[0])
        except json.JSONDecodeError:
            continue
    return found


def strings(document: Any) -> set[tuple[str, str]]:
    """(key, value) of every string field of a document, at any depth."""
    found: set[tuple[str, str]] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if isinstance(value, str):
                found.add((key, value))
            found |= strings(value)
    elif isinstance(document, list):
        for value in document:
            found |= strings(value)
    return found


def check_reply(reply: str, output: str, printed: list[set[tuple[str, str]]]) -> None:
    if reply.startswith("{"):
        fields = {
            (key, value)
            for key, value in re.findall(r'"(\w+)":\s*"([^"]*)"', reply)
            if "…" not in value
        }
        assert fields, reply
        assert any(fields <= document for document in printed), (
            f"no reply printed has {sorted(fields)}:\n{output}"
        )
    else:
        flat = " ".join(output.split())
        for part in reply.split("…"):
            assert " ".join(part.split()) in flat, f"{part!r} is not in the output:\n{output}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("script", sessions())
def test_a_session_runs_as_printed(script: str, address: str) -> None:
    output = run_session(script, address)
    printed = [strings(d) for d in documents(output)]
    shown = replies(script)
    assert len(shown) >= 5
    for reply in shown:
        check_reply(reply, output, printed)


def test_a_reply_that_differs_is_caught() -> None:
    output = '{\n  "campaign": {\n    "status": "STATUS_STOP",\n    "name": "a"\n  }\n}\nexit 67\n'
    printed = [strings(d) for d in documents(output)]
    check_reply('{ "campaign": { "status": "STATUS_STOP", "name": "…" } }', output, printed)
    check_reply("exit 67", output, printed)
    with pytest.raises(AssertionError):
        check_reply('{ "campaign": { "status": "STATUS_RUN", "name": "a" } }', output, printed)
    with pytest.raises(AssertionError):
        check_reply("exit 3", output, printed)
