"""The Java artifact as a user gets it: what dist/maven/ holds, and a program built on the jar.

tests/java_consumer/Consumer.java is compiled against the jar that `make dist-java` builds and
the jars that stand for the compile dependencies of its pom (tests/maven_artifact.py), nothing
else of this repository, and run with its runtime dependencies added against a real server.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import maven_artifact
from e2e_helpers import Process, free_port, token_line, wait_serving
from toolchains import BUILD, ROOT, run

CONSUMER = ROOT / "tests" / "java_consumer" / "Consumer.java"
RESOURCE = "io/github/campaigngrpc/client/service_config.json"


@pytest.fixture(scope="module")
def pom() -> maven_artifact.Pom:
    return maven_artifact.build()


def artifact(pom: maven_artifact.Pom, suffix: str) -> Path:
    return maven_artifact.artifact_dir(pom) / f"{pom.artifact_id}-{pom.version}{suffix}"


def test_the_pom_names_the_artifact_and_its_dependencies(pom: maven_artifact.Pom) -> None:
    assert (pom.group_id, pom.artifact_id) == ("io.github.campaign-grpc", "campaign-grpc-client")
    assert pom.version == (ROOT / "VERSION").read_text().strip()
    assert artifact(pom, ".pom").read_bytes() == maven_artifact.POM.read_bytes()
    keys = {dependency.key for dependency in pom.dependencies}
    assert {
        "io.grpc:grpc-api",
        "io.grpc:grpc-stub",
        "io.grpc:grpc-protobuf",
        "com.google.protobuf:protobuf-java",
        "com.google.api.grpc:proto-google-common-protos",
    } <= keys
    for dependency in pom.dependencies:
        assert dependency.version, dependency
        # What the jar was built and is tested with is the version the pom asks for.
        jar = maven_artifact.STAND_INS[dependency.key][0]
        tested = maven_artifact.debian_version(jar)
        if tested is not None and dependency.key != "org.apache.tomcat:annotations-api":
            assert dependency.version == tested, (dependency, jar)


def test_the_jar_holds_the_classes_the_helpers_and_the_retry_policy(
    pom: maven_artifact.Pom,
) -> None:
    with zipfile.ZipFile(artifact(pom, ".jar")) as jar:
        names = set(jar.namelist())
        resource = jar.read(RESOURCE)
    generated = "io/github/campaigngrpc/campaign/v1/"
    for name in ("Campaign", "CampaignServiceGrpc", "WatchStatusResponse", "HoldLeasesRequest"):
        assert f"{generated}{name}.class" in names
    for name in ("CampaignClient", "CampaignClient$Details", "CampaignClient$Handler", "Dialer"):
        assert f"io/github/campaigngrpc/client/{name}.class" in names
    assert not any(name.endswith(".java") for name in names)
    assert (
        resource
        == (ROOT / "clients" / "java" / "src" / "main" / "resources" / RESOURCE).read_bytes()
    )

    with zipfile.ZipFile(artifact(pom, "-sources.jar")) as sources:
        source_names = set(sources.namelist())
    classes = {n.removesuffix(".class") for n in names if n.endswith(".class") and "$" not in n}
    assert {f"{name}.java" for name in classes} <= source_names
    for file in (".jar", "-sources.jar", ".pom"):
        digest = hashlib.sha1(artifact(pom, file).read_bytes()).hexdigest()
        assert artifact(pom, f"{file}.sha1").read_text().strip() == digest


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    token = secrets.token_hex(16)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(token_line(token, "*"))
    address = f"127.0.0.1:{free_port()}"
    database = f"sqlite:///{tmp_path / 'campaigns.db'}"
    proc = Process(
        ["--listen", address, "--database-url", database, "--auth-tokens", str(tokens)],
        tmp_path / "server.log",
    )
    try:
        asyncio.run(wait_serving(address, proc))
        yield address, token
    finally:
        proc.terminate()
        proc.kill()


@pytest.mark.timeout(300)
def test_a_program_built_on_the_jar_alone_calls_a_real_server(
    pom: maven_artifact.Pom, server: tuple[str, str]
) -> None:
    jar = artifact(pom, ".jar")
    compile_path = [jar, *maven_artifact.stand_ins(pom, {""})]
    classes = BUILD / "java-consumer"
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    run(
        ["javac", "-d", classes, "-cp", maven_artifact.classpath(compile_path), CONSUMER],
        timeout=120,
    )
    runtime_path = [classes, *compile_path, *maven_artifact.stand_ins(pom, {"runtime"})]
    output = run(
        ["java", "-cp", maven_artifact.classpath(runtime_path), "example.Consumer", *server],
        timeout=120,
    )
    facts = [line.split() for line in output.splitlines() if line.strip()]
    created = [fact[1] for fact in facts if fact[0] == "created"]
    before, during, after = created

    # Create, then a watch from the start: the snapshot, then a change made meanwhile.
    assert [fact[1:] for fact in facts if fact[0] == "first-watch"] == [
        ["KIND_SNAPSHOT", before],
        ["KIND_SNAPSHOT_END"],
        ["KIND_CHANGE", during],
    ]
    # From the last revision that watch handled: only what came after, then caught up.
    assert [fact[1:] for fact in facts if fact[0] == "resumed-watch"] == [
        ["KIND_CHANGE", after],
        ["KIND_HEARTBEAT"],
    ]
    details = {fact[0]: fact[1:] for fact in facts}
    assert details["not-found"] == ["NOT_FOUND", "CAMPAIGN_NOT_FOUND", "campaign-grpc"]
    # A status without details (no server there) reads as empty, and nothing throws.
    assert details["unavailable"] == ["UNAVAILABLE", "reason=true", "metadata=true", "violations=0"]
    assert details["not-a-status"] == ["UNKNOWN", "reason=true"]
    # The package's channel retries UNAVAILABLE for a method safe to repeat, and only there.
    assert details["get"] == ["retried", "attempts=3"]
    assert details["create"] == ["UNAVAILABLE", "attempts=1"]
