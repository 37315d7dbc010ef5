"""The Java client test (tests/java/): the jar `make dist-java` builds, run by JUnit 4.

The test starts its servers itself (`campaign-grpc serve`, CAMPAIGN_GRPC_COMMAND), since it
restarts and freezes them. It compiles against the jar and the jars that stand for the pom's
dependencies (tests/maven_artifact.py), not against the package's sources.
"""

from __future__ import annotations

import re
import shutil

import pytest

import maven_artifact
from toolchains import BUILD, ROOT, child_env, run

JAVA_TESTS = ROOT / "tests" / "java"


# The JUnit classes, each in tests/java/<name>.java: the client's calls, and the dialer kit.
TEST_CLASSES = ("CampaignClientTest", "DialerTest")


def java_tests() -> int:
    sources = [(JAVA_TESTS / f"{name}.java").read_text() for name in TEST_CLASSES]
    return sum(len(re.findall(r"^\s*@Test\b", source, re.MULTILINE)) for source in sources)


@pytest.mark.timeout(900)
def test_the_java_client_test_passes_against_real_servers() -> None:
    pom = maven_artifact.build()
    jar = maven_artifact.artifact_dir(pom) / f"{pom.artifact_id}-{pom.version}.jar"
    classes = BUILD / "java" / "classes"
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    jars = [jar, *maven_artifact.stand_ins(pom, {"", "runtime"}), *maven_artifact.TEST_JARS]
    classpath = maven_artifact.classpath(jars)
    sources = sorted(JAVA_TESTS.glob("*.java"))
    run(["javac", "-Xlint:none", "-d", classes, "-cp", classpath, *sources], timeout=300)

    junit = ["org.junit.runner.JUnitCore", *TEST_CLASSES]
    output = run(
        ["java", "-cp", f"{classes}:{classpath}", *junit],
        env=child_env(),
        timeout=600,
    )

    count = java_tests()
    assert count >= 15
    assert f"OK ({count} tests)" in output, output
