"""The documentation a reader has: README.md and the pages of the site (docs/). The tests that
check the code and the names printed in them read all of it, wherever a section lives."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def text() -> str:
    """Every document, one after the other."""
    return "\n".join(path.read_text() for path in DOCUMENTS)


def code_blocks(language: str) -> list[str]:
    """The ```language blocks of every document, in order."""
    return [
        block
        for path in DOCUMENTS
        for block in re.findall(
            rf"^```{language}\n(.*?)^```$", path.read_text(), re.DOTALL | re.MULTILINE
        )
    ]
