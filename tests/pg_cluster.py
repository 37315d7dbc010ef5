"""PostgreSQL clusters of a test's own, in a temporary directory: a primary, and a standby
made from it with pg_basebackup that the test promotes.

The machine's PostgreSQL is shared and takes no replication connections, so the primary is
one of these too. PostgreSQL refuses to run as root: as root, the commands run as the
postgres user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from e2e_helpers import free_port

_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/bin")


def _binary(name: str) -> str | None:
    for directory in _BIN_DIRS:
        path = Path(directory) / name
        if path.exists():
            return str(path)
    return None


def missing() -> str:
    """Why clusters cannot be made here ("" when they can)."""
    for name in ("initdb", "pg_ctl", "pg_basebackup"):
        if _binary(name) is None:
            return f"{name} not found in {', '.join(_BIN_DIRS)}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run PostgreSQL as"
    return ""


def _run(*args: str) -> None:
    command = [_binary(args[0]) or args[0], *args[1:]]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")


class Cluster:
    def __init__(self, root: Path, name: str) -> None:
        self.data = root / name
        self.port = free_port()
        self._root = root
        self._running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        _run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")

    def backup_of(self, primary: Cluster) -> None:
        """A base backup of primary that starts as its standby (-R)."""
        _run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "-X",
            "stream",
            "-R",
            "--no-sync",
            # At once, not after a checkpoint spread over minutes.
            "--checkpoint=fast",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self._root}"
            " -c fsync=off -c max_connections=60"
        )
        log = str(self._root / f"{self.data.name}.log")
        _run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self._running = True

    def promote(self) -> None:
        _run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def stop(self) -> None:
        if self._running:
            _run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self._running = False


@contextlib.contextmanager
def clusters_dir() -> Iterator[Path]:
    """A directory the postgres user owns (pytest's tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="campaign-pg-"))
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
