"""The Go client test (tests/go/): the Go module's packages (clients/go), run by `go test`.

The Go test starts its servers itself (`campaign-grpc serve`, CAMPAIGN_GRPC_COMMAND), since it
restarts and freezes them. It builds the module's packages as the checkout has them, in GOPATH
mode against the Go packages Debian installs in /usr/share/gocode (toolchains.go_build_env);
tests/e2e/test_go_module.py gets the module in module mode, as its users do.
"""

from __future__ import annotations

import re

import pytest

from toolchains import ROOT, go_build_env, run

GO_TESTS = ROOT / "tests" / "go"


def go_tests() -> list[str]:
    """The tests and examples of tests/go, each of which must have run and passed."""
    names: list[str] = []
    for source in sorted(GO_TESTS.glob("*_test.go")):
        names += re.findall(
            r"^func ((?:Test|Example)\w*)\((?:t \*testing\.T)?\)", source.read_text(), re.M
        )
    return names


@pytest.mark.timeout(900)
def test_the_go_client_test_passes_against_real_servers() -> None:
    env = go_build_env()
    output = run(
        ["go", "test", "-count=1", "-v", "."],
        cwd=GO_TESTS,
        env=env,
        timeout=840,
    )

    expected = go_tests()
    assert len(expected) >= 12, expected
    passed = set(re.findall(r"^--- PASS: (\w+)", output, re.MULTILINE))
    assert passed == set(expected), output
    assert "--- SKIP" not in output, output
