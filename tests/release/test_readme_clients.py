"""The Go, Java and TypeScript code of the README and the documentation site is the tested
code itself, so that it works as printed.

Each ```go, ```java or ```ts block of README.md and docs/ must appear, line for line (indentation
aside), in one file of SOURCES (the tests, the Go module's helpers, the Java package's sources
and the TypeScript consumer of the npm package); a line `// ...` in a block stands for code left
out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from documents import code_blocks

ROOT = Path(__file__).resolve().parents[2]
# The folders of each language's tested code, searched with their subfolders.
SOURCES = {
    "go": [ROOT / "tests" / "go", ROOT / "clients" / "go" / "campaignclient"],
    "java": [ROOT / "tests" / "java", ROOT / "clients" / "java" / "src" / "main" / "java"],
    "ts": [ROOT / "tests" / "node_consumer"],
}
EXTENSIONS = {"go": "*.go", "java": "*.java", "ts": "*.ts"}
MIN_BLOCKS = {"go": 5, "java": 5, "ts": 4}


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def parts(block: str) -> list[list[str]]:
    """The runs of lines of a block between its `// ...` lines."""
    runs: list[list[str]] = [[]]
    for line in lines(block):
        if line == "// ...":
            runs.append([])
        else:
            runs[-1].append(line)
    return [run for run in runs if run]


def contains(haystack: list[str], needle: list[str]) -> bool:
    return any(
        haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1)
    )


@pytest.mark.parametrize("language", ["go", "java", "ts"])
def test_every_snippet_of_the_readme_is_taken_from_the_tested_code(language: str) -> None:
    sources = {
        path: lines(path.read_text())
        for folder in SOURCES[language]
        for path in sorted(folder.rglob(EXTENSIONS[language]))
    }
    snippets = code_blocks(language)
    assert len(snippets) >= MIN_BLOCKS[language], (
        f"README.md and docs/ have {len(snippets)} {language} blocks"
    )
    for snippet in snippets:
        for part in parts(snippet):
            assert any(contains(source, part) for source in sources.values()), (
                f"not in {[str(f.relative_to(ROOT)) for f in SOURCES[language]]} as printed:\n"
                + "\n".join(part)
            )


def test_a_changed_snippet_is_noticed() -> None:
    source = lines("a := 1\nb := 2\nc := 3\n")
    assert contains(source, lines("b := 2\nc := 3"))
    assert not contains(source, lines("a := 1\nc := 3"))
    assert parts("a\n// ...\nc\n") == [["a"], ["c"]]
