"""The Go module clients/go as its users get it.

Its generated package is committed: `make go-client` must write exactly those files. And a
module of another team (tests/go_consumer) gets it with `go get` in module mode, from a module
proxy, offline: tools/goproxy.py serves the module from the checkout at VERSION, and its
dependencies from the Go sources Debian installs (under build/, kept between runs). The
consumer then builds and runs against a real server.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import serving
from toolchains import (
    BUILD,
    DEBIAN_GOPATH,
    GO_MODULE,
    ROOT,
    child_env,
    require_go,
    run,
)

sys.path.insert(0, str(ROOT / "tools"))
import goproxy

GENERATED = ROOT / "clients" / "go" / "campaign" / "v1"
CONSUMER = ROOT / "tests" / "go_consumer"
PROXY = BUILD / "go-proxy"
# The consumer's GOPATH, with its module cache (made writable by -modcacherw, to be removed).
CONSUMER_GOPATH = BUILD / "go-consumer"
VERSION = "v" + (ROOT / "VERSION").read_text().strip()


def test_the_committed_go_code_is_what_make_go_client_writes(tmp_path: Path) -> None:
    require_go("protoc", "protoc-gen-go-grpc")
    run(["make", "--no-print-directory", "go-client", f"GO_OUT={tmp_path}"], timeout=300)
    written = {p.name: p.read_text() for p in (tmp_path / "campaign" / "v1").iterdir()}
    committed = {p.name: p.read_text() for p in GENERATED.glob("*.go")}
    assert sorted(written) == ["campaign.pb.go", "campaign_grpc.pb.go", "options.pb.go"]
    assert written == committed, "clients/go/campaign/v1 differs from `make go-client`: run it"


def test_the_go_code_is_formatted_as_gofmt_writes_it() -> None:
    require_go()
    folders = [ROOT / "clients" / "go", ROOT / "tests" / "go", CONSUMER]
    assert run(["gofmt", "-l", *folders], timeout=60) == ""


def test_dist_go_writes_the_module_as_a_proxy_serves_its_release(tmp_path: Path) -> None:
    output = run([sys.executable, ROOT / "tools" / "goproxy.py", tmp_path], timeout=60)
    folder = tmp_path / GO_MODULE / "@v"
    names = [f"{VERSION}.info", f"{VERSION}.mod", f"{VERSION}.zip"]
    assert output.split() == [str(folder / name) for name in names]
    assert (folder / "list").read_text() == f"{VERSION}\n"
    assert json.loads((folder / f"{VERSION}.info").read_text())["Version"] == VERSION
    assert (folder / f"{VERSION}.mod").read_text() == (ROOT / "clients/go/go.mod").read_text()
    with zipfile.ZipFile(folder / f"{VERSION}.zip") as archive:
        files = archive.namelist()
    prefix = f"{GO_MODULE}@{VERSION}/"
    assert all(name.startswith(prefix) for name in files), files
    assert {name.removeprefix(prefix) for name in files} >= {
        "go.mod",
        "campaign/v1/campaign.pb.go",
        "campaign/v1/campaign_grpc.pb.go",
        "campaign/v1/options.pb.go",
        "campaignclient/service_config.json",
        "campaignclient/version.go",
    }


def module_proxy() -> goproxy.Requirement:
    """The proxy under build/: Debian's modules as the consumer's requirements and the
    module's need them (made again only when they change), and the module as the checkout
    has it, at VERSION."""
    modules = goproxy.debian_modules(DEBIAN_GOPATH)
    roots = goproxy.requirements((CONSUMER / "go.mod").read_text()) + goproxy.requirements(
        (ROOT / "clients" / "go" / "go.mod").read_text()
    )
    stamp = json.dumps(
        {
            "roots": sorted(f"{r.path}@{r.version}" for r in roots),
            "modules": {p: [str(f), (f / "go.mod").stat().st_mtime] for p, f in modules.items()},
        },
        sort_keys=True,
    )
    made = PROXY / "debian.json"
    if not made.exists() or made.read_text() != stamp:
        shutil.rmtree(PROXY, ignore_errors=True)
        shutil.rmtree(CONSUMER_GOPATH, ignore_errors=True)
        goproxy.serve_debian(PROXY, roots, modules)
        made.write_text(stamp)
    served = goproxy.serve_module(PROXY)
    # The module cache keeps a version once downloaded: this one is the checkout's of now.
    cache = CONSUMER_GOPATH / "pkg" / "mod"
    path = goproxy.escape(served.path)
    for cached in (cache / f"{path}@{served.version}", cache / "cache" / "download" / path):
        shutil.rmtree(cached, ignore_errors=True)
    return served


def module_env() -> dict[str, str]:
    """Module mode with nothing but the proxy: no checksum database (see tools/goproxy.py),
    no network, no settings of this machine's."""
    return child_env(
        GO111MODULE="on",
        GOPROXY=f"file://{PROXY}",
        GOSUMDB="off",
        GOFLAGS="-mod=mod -modcacherw",
        GOPATH=str(CONSUMER_GOPATH),
        GOCACHE=str(BUILD / "go-cache"),
        GOENV="off",
        GOWORK="off",
    )


@pytest.fixture
def server_address(tmp_path: Path) -> Iterator[str]:
    with serving(tmp_path) as target:
        yield target


@pytest.mark.timeout(600)
def test_another_module_gets_the_module_and_calls_a_server(
    tmp_path: Path, server_address: str
) -> None:
    require_go()
    served = module_proxy()
    consumer = tmp_path / "consumer"
    shutil.copytree(CONSUMER, consumer)
    env = module_env()

    run(["go", "get", f"{GO_MODULE}@{VERSION}"], cwd=consumer, env=env, timeout=300)
    assert f"{GO_MODULE} {VERSION}" in (consumer / "go.mod").read_text()
    got = json.loads(
        run(["go", "list", "-m", "-json", GO_MODULE], cwd=consumer, env=env, timeout=60)
    )
    assert (got["Version"], got.get("Replace")) == (served.version, None)
    assert Path(got["Dir"]).is_relative_to(CONSUMER_GOPATH / "pkg" / "mod")
    binary = tmp_path / "consumer-bin"
    run(["go", "build", "-o", binary, "."], cwd=consumer, env=env, timeout=300)

    # Its packages campaigns and follow each import the module, in one binary: it starts,
    # with one registration of campaign/v1's files. gRPC-Go 1.33 retries only with
    # GRPC_GO_RETRY=on (1.41 and later by default).
    output = run([binary, server_address], env=child_env(GRPC_GO_RETRY="on"), timeout=120)
    report: dict[str, Any] = json.loads(output)

    assert report["version"] == VERSION.removeprefix("v")
    first, second = report["first"], report["second"]
    assert [(i["kind"], i["campaign_id"]) for i in report["snapshot"]] == [
        ("KIND_SNAPSHOT", first),
        ("KIND_SNAPSHOT_END", ""),
    ]
    # A watch resumed after the snapshot's revision sees the later change, and only it.
    assert [(i["kind"], i["campaign_id"]) for i in report["resumed"]] == [("KIND_CHANGE", second)]
    assert all(i["revision"] > report["resume_after"] for i in report["resumed"])

    assert report["not_found"]["code"] == "NotFound"
    assert report["not_found"]["reason"] == "CAMPAIGN_NOT_FOUND"
    # A server down: UNAVAILABLE without details, read without a panic.
    assert report["unavailable"]["code"] == "Unavailable"
    assert report["unavailable"]["reason"] == ""
    assert not report["unavailable"]["metadata"]
    # The default connection's retry policy: a read retried through two UNAVAILABLE answers,
    # a create (without a request_id the channel cannot see) not retried.
    assert report["attempts"] == {"GetCampaign": 3, "CreateCampaign": 1}
    assert report["retried"] == {"GetCampaign": "OK", "CreateCampaign": "Unavailable"}
