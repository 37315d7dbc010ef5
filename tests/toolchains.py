"""Running the Go and Java client tests: their toolchains, generation, and child processes.

Without a toolchain a test is skipped with what to install, except in CI (CI=true), where
.ci/run installs every toolchain and a missing one is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
# Where Debian installs the sources of its Go packages (a GOPATH).
DEBIAN_GOPATH = Path("/usr/share/gocode")
CLI = Path(sys.executable).parent / "campaign-grpc"


def require(missing: Sequence[str], install: str) -> None:
    """Skips the test (fails it in CI) when anything it needs is missing."""
    if not missing:
        return
    message = f"missing {', '.join(missing)}: install {install} (as .ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def missing_commands(*commands: str) -> list[str]:
    return [command for command in commands if shutil.which(command) is None]


def missing_paths(*paths: Path) -> list[str]:
    return [str(path) for path in paths if not path.exists()]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a client test: no setting of ours leaks into the servers it starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_GRPC_")}
    return {**env, "CAMPAIGN_GRPC_COMMAND": str(CLI), **extra}


def run(
    args: Sequence[str | Path],
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float,
) -> str:
    """Runs a command to its end; its output, or a failure that shows it.

    The command runs in a session of its own, killed whole on a timeout: `go test` runs the test
    binary as a child, and the tests run servers as theirs."""
    with subprocess.Popen(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            pytest.fail(f"{' '.join(map(str, args))} did not end within {timeout} s:\n{output}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{output}")
    return output


LIBFAKETIME = Path("/usr/lib", sysconfig.get_config_var("MULTIARCH") or "", "faketime") / (
    "libfaketime.so.1"
)


def shifted(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is offset ("+90s", "-90s", "+25h") by
    libfaketime (Debian's faketime). Its monotonic clock stays true: a host whose wall clock
    is wrong still counts seconds right."""
    require(missing_paths(LIBFAKETIME), "faketime (apt-get install faketime)")
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


# The Debian packages the Go client and the Go dialer build with (as .ci/run installs them).
GO_INSTALL = (
    "golang-go protobuf-compiler golang-google-grpc-dev golang-google-protobuf-dev "
    "golang-github-golang-protobuf-1-5-dev golang-google-genproto-dev protoc-gen-go-grpc"
)
# The Go module's path (clients/go/go.mod).
GO_MODULE = "github.com/campaign-grpc/campaign-grpc/clients/go"
# Import paths under a GOPATH of the build's own: the module's packages, from the checkout,
# and the tests of tests/go.
GO_IMPORT_PATHS = {
    GO_MODULE: ROOT / "clients" / "go",
    "campaign-grpc/tests/go": ROOT / "tests" / "go",
}


def require_go(*commands: str) -> None:
    """Skips (fails in CI) without Go, the Go packages Debian installs, or commands."""
    require(
        missing_commands("go", *commands)
        + missing_paths(
            DEBIAN_GOPATH / "src/google.golang.org/grpc",
            DEBIAN_GOPATH / "src/google.golang.org/genproto/googleapis/rpc/errdetails",
            DEBIAN_GOPATH / "src/google.golang.org/protobuf/cmd/protoc-gen-go",
        ),
        GO_INSTALL,
    )


def go_build_env() -> dict[str, str]:
    """The environment that builds tests/go against the module's packages as the checkout has
    them, in GOPATH mode against the Go packages Debian installs: Debian ships no module
    cache, and tests/go needs no module proxy (tests/e2e/test_go_module.py builds a consumer in
    module mode). Skips (fails in CI) without them."""
    require_go()
    gopath = BUILD / "gopath"
    for import_path, folder in GO_IMPORT_PATHS.items():
        link = gopath / "src" / import_path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(folder, target_is_directory=True)
    return child_env(
        GO111MODULE="off",
        GOPATH=f"{gopath}:{DEBIAN_GOPATH}",
        GOCACHE=str(BUILD / "go-cache"),
        GOFLAGS="",
    )
