"""A client test without its toolchain: skipped with what to install, but failed in CI."""

from __future__ import annotations

import pytest

from toolchains import missing_commands, require


def test_a_missing_toolchain_skips_the_test_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"missing go: install golang-go \(as"):
        require(["go"], "golang-go")


def test_a_missing_toolchain_fails_the_test_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing go: install golang-go"):
        require(["go"], "golang-go")


def test_nothing_missing_lets_the_test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require(missing_commands("sh"), "a shell")
    assert missing_commands("sh", "no-such-command-anywhere") == ["no-such-command-anywhere"]
