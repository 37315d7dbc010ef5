"""The Java artifact as its users get it: what `make dist-java` puts in dist/maven/, and the
jars that stand for the dependencies its pom names.

Maven Central is out of reach here: the jars Debian installs in /usr/share/java (the packages
.ci/run installs) stand for the pom's dependencies. Debian has no jar of the google.rpc
messages (com.google.api.grpc:proto-google-common-protos): `make dist-java` makes one from the
google/rpc/*.proto files that googleapis-common-protos installs beside its Python modules.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from toolchains import BUILD, ROOT, missing_commands, missing_paths, require, run

DEBIAN_JARS = Path("/usr/share/java")
POM = ROOT / "clients" / "java" / "pom.xml"
RPC_JAR = BUILD / "java-client" / "proto-google-common-protos.jar"
INSTALL = (
    "openjdk-17-jdk-headless protobuf-compiler libprotobuf-dev libgrpc-java "
    "protobuf-compiler-grpc-java-plugin libprotobuf-java libguava-java libgoogle-gson-java "
    "libnetty-java libperfmark-java libgeronimo-annotation-1.3-spec-java junit4"
)


def debian(*names: str) -> list[Path]:
    return [DEBIAN_JARS / f"{name}.jar" for name in names]


NETTY = """
    netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common
    netty-handler netty-handler-proxy netty-resolver netty-transport
"""
# Each dependency of the pom: the jars that stand for it with what it brings along (the first
# one is the dependency itself, of the pom's version).
STAND_INS: dict[str, list[Path]] = {
    "io.grpc:grpc-api": debian("grpc-api", "grpc-context", "guava"),
    "io.grpc:grpc-stub": debian("grpc-stub"),
    "io.grpc:grpc-protobuf": debian("grpc-protobuf", "grpc-protobuf-lite"),
    "com.google.protobuf:protobuf-java": debian("protobuf"),
    "com.google.api.grpc:proto-google-common-protos": [RPC_JAR],
    "com.google.code.gson:gson": debian("gson"),
    # Debian has grpc-netty and the Netty jars, not the shaded grpc-netty-shaded.
    "io.grpc:grpc-netty-shaded": debian("grpc-netty", "grpc-core", "perfmark-api", *NETTY.split()),
    "org.apache.tomcat:annotations-api": debian("geronimo-annotation-1.3-spec"),
}
TEST_JARS = debian("junit4", "hamcrest-core")
NS = {"m": "http://maven.apache.org/POM/4.0.0"}


@dataclass(frozen=True)
class Dependency:
    group_id: str
    artifact_id: str
    version: str
    scope: str

    @property
    def key(self) -> str:
        return f"{self.group_id}:{self.artifact_id}"


@dataclass(frozen=True)
class Pom:
    group_id: str
    artifact_id: str
    version: str
    dependencies: list[Dependency]


def read_pom(path: Path) -> Pom:
    """The coordinates and the dependencies of a pom, its ${properties} filled in."""
    root = ET.parse(path).getroot()
    properties = {
        child.tag.split("}")[1]: child.text or "" for child in root.findall("m:properties/*", NS)
    }

    def text(element: ET.Element, name: str, default: str = "") -> str:
        value = element.findtext(f"m:{name}", default, NS)
        return re.sub(r"\$\{([^}]+)\}", lambda m: properties[m.group(1)], value)

    return Pom(
        group_id=text(root, "groupId"),
        artifact_id=text(root, "artifactId"),
        version=text(root, "version"),
        dependencies=[
            Dependency(
                text(d, "groupId"), text(d, "artifactId"), text(d, "version"), text(d, "scope")
            )
            for d in root.findall("m:dependencies/m:dependency", NS)
        ],
    )


def artifact_dir(pom: Pom) -> Path:
    """Where a Maven repository keeps the artifact: groupId's dots as folders."""
    group = pom.group_id.replace(".", "/")
    return ROOT / "dist" / "maven" / group / pom.artifact_id / pom.version


def stand_ins(pom: Pom, scopes: set[str]) -> list[Path]:
    """The jars that stand for the pom's dependencies of these scopes ("" is compile)."""
    return [
        jar
        for dependency in pom.dependencies
        if dependency.scope in scopes
        for jar in STAND_INS[dependency.key]
    ]


def debian_version(jar: Path) -> str | None:
    """The version of a Debian jar, from the versioned name it is installed under as well."""
    for path in jar.parent.glob(f"{jar.stem}-[0-9]*.jar"):
        return path.stem[len(jar.stem) + 1 :]
    return None


def build() -> Pom:
    """Builds the artifact (make dist-java); skips (fails in CI) without the toolchain."""
    require(
        missing_commands("java", "javac", "jar", "protoc", "grpc_java_plugin")
        + missing_paths(
            *(jar for jars in STAND_INS.values() for jar in jars if jar != RPC_JAR),
            *TEST_JARS,
            Path("/usr/include/google/protobuf/duration.proto"),
        ),
        INSTALL,
    )
    run(["make", "--no-print-directory", "dist-java"], timeout=300)
    return read_pom(POM)


def classpath(jars: list[Path]) -> str:
    return ":".join(map(str, jars))
