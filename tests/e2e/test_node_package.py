"""The npm package @campaign-grpc/client as its users have it: `make dist-node` packs it, a
TypeScript project outside the checkout installs the tarball with npm, type-checks
tests/node_consumer/consumer.ts against it with strict, and runs it on a real server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from e2e_helpers import Process, free_port, wait_serving
from toolchains import ROOT, child_env, missing_commands, require, run

CONSUMER = ROOT / "tests" / "node_consumer"


def tarball() -> Path:
    """Packs the package (make dist-node) and returns the tarball npm pack made."""
    run(["make", "--no-print-directory", "dist-node"], timeout=600)
    version = (ROOT / "VERSION").read_text().strip()
    packed = ROOT / "dist" / f"campaign-grpc-client-{version}.tgz"
    assert packed.is_file(), f"make dist-node did not write {packed}"
    return packed


def consumer_project(folder: Path, package: Path) -> Path:
    """A project of its own with the package and TypeScript installed by npm, as a user's."""
    folder.mkdir()
    (folder / "package.json").write_text(json.dumps({"name": "consumer", "private": True}))
    for name in ("consumer.ts", "tsconfig.json"):
        shutil.copy(CONSUMER / name, folder / name)
    # The versions the checkout builds with; npm's cache makes a rerun quick.
    tools = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    wanted = [f"{name}@{tools[name]}" for name in ("@grpc/grpc-js", "typescript", "@types/node")]
    run(
        ["npm", "install", "--prefer-offline", "--no-audit", "--no-fund", package, *wanted],
        cwd=folder,
        timeout=300,
    )
    return folder


def test_the_packed_package_type_checks_and_runs_in_a_typescript_project(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    require(missing_commands("node", "npm"), "nodejs npm")
    project = consumer_project(tmp_path / "consumer", tarball())
    package = project / "node_modules" / "@campaign-grpc" / "client"
    installed = json.loads((package / "package.json").read_text())
    assert installed["version"] == (ROOT / "VERSION").read_text().strip()
    assert (package / installed["types"]).is_file()

    run([project / "node_modules/.bin/tsc", "-p", project], cwd=project, timeout=300)

    target = f"127.0.0.1:{free_port()}"
    db = f"sqlite:///{tmp_path / 'campaigns.db'}"
    proc = spawn("--listen", target, "--database-url", db, "--heartbeat-interval", "0.5")
    asyncio.run(wait_serving(target, proc))
    output = run(
        ["node", "--test", "out/consumer.js"],
        cwd=project,
        env=child_env(CAMPAIGN_GRPC_ADDRESS=target),
        timeout=120,
    )
    assert "# pass 5" in output, output
    assert "# fail 0" in output, output
