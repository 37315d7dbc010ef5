"""deploy/kubernetes: valid for Kubernetes, complete, and saying only what the server accepts.

Rendered here as `kubectl apply -k` renders them (the listed files, the image set by the
kustomization), then checked against the Kubernetes schemas kubernetes-validate carries, and
against the server itself: every flag and CAMPAIGN_GRPC_* variable is a setting of its
subcommand, the command line parses to settings that work together, and the probes, ports,
Secrets and limits agree with those settings. Last, the commands run as written: the Job's
migrates a PostgreSQL database, and the Deployment's serves on it with the runtime role the
example Secrets' comments grant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import io
import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import kubernetes_validate
import psycopg
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

import documents
from campaign_grpc import cli
from campaign_grpc.ops.auth import TokenFile
from campaign_grpc.ops.registration import SERVICE_NAME
from campaign_grpc.ops.security import exposure_problem
from campaign_grpc.settings import Settings, conflicts, env_name, from_namespace, split_address
from campaign_grpc_client.v1 import campaign_pb2 as pb
from campaign_grpc_client.v1 import campaign_pb2_grpc
from certificates import Authority
from e2e_helpers import Process, eventually, free_port, run, wait_serving
from factories import new_id

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "kubernetes"
VERSION = (ROOT / "VERSION").read_text().strip()
# The oldest release the manifests need (the preStop sleep action is on by default from 1.30),
# and the newest whose schemas kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
# The image's user (Dockerfile), which runAsUser names.
IMAGE_UID = 10001
PROGRAM = "campaign-grpc"
# The kustomization fields the renderer below follows; any other would be ignored by it.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images"}
# What a replica's memory is made of beyond its settings' bounds (docs/performance.md: RSS
# idle), and per open WatchStatus stream and per byte of a unary request in flight.
IDLE_BYTES = 64 * 2**20
WATCH_STREAM_BYTES = 27 * 2**10
REQUEST_MEMORY_FACTOR = 9


def kustomization() -> dict[str, Any]:
    data = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def render(folder: Path = FOLDER) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize folder` prints: the listed files' documents, in order,
    with the kustomization's images set."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - KUSTOMIZATION_FIELDS
    assert not unknown, f"kustomization fields this test does not render: {sorted(unknown)}"
    objects = [
        doc
        for name in spec["resources"]
        for doc in yaml.safe_load_all((folder / name).read_text())
        if doc is not None
    ]
    for image in spec.get("images", []):
        for obj in objects:
            for container in containers(obj):
                if container["image"].split(":")[0] == image["name"]:
                    name = image.get("newName", image["name"])
                    container["image"] = f"{name}:{image['newTag']}"
    return objects


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "Job"):
        spec: dict[str, Any] = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(obj)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def server(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def secret_value(objects: list[dict[str, Any]], name: str, key: str) -> str:
    data: dict[str, str] = one(objects, "Secret", name).get("stringData", {})
    assert key in data, f"Secret {name} has no {key}"
    return data[key]


def environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The variables the container starts with: envFrom's ConfigMaps and Secrets, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(one(objects, "Secret", source["secretRef"]["name"])["stringData"])
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = secret_value(objects, ref["name"], ref["key"]) if ref else var["value"]
    return env


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def accepted_settings(subcommand: str) -> list[str]:
    only = cli.MIGRATE_SETTINGS if subcommand == "migrate" else None
    return [f.name for f in fields(Settings) if only is None or f.name in only]


def flags_of(name: str) -> set[str]:
    flag = "--" + name.replace("_", "-")
    field = next(f for f in fields(Settings) if f.name == name)
    switched_off = field.metadata.get("nargs") == "?" and field.default is True
    return {flag, "--no-" + flag[2:]} if switched_off else {flag}


def command_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every subcommand, flag and CAMPAIGN_GRPC_* variable of the manifests that the server
    does not have, each named with its container."""
    problems = []
    for obj in objects:
        for container in containers(obj):
            where = f"{obj['kind']} {obj['metadata']['name']}"
            program, subcommand, *args = container["command"] + container.get("args", [])
            if program != PROGRAM or subcommand not in subcommands():
                problems.append(f"{where}: {program} {subcommand} is no command of the server")
                continue
            names = accepted_settings(subcommand)
            flags = set().union(*(flags_of(n) for n in names))
            for arg in args:
                if arg.startswith("-") and arg.split("=")[0] not in flags:
                    problems.append(f"{where}: {subcommand} has no flag {arg.split('=')[0]}")
            variables = {env_name(n) for n in names}
            for var in environment(objects, container):
                if var.startswith("CAMPAIGN_GRPC_") and var not in variables:
                    problems.append(f"{where}: {subcommand} has no setting {var}")
    return problems


def effective(
    objects: list[dict[str, Any]], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Settings]:
    """The container's subcommand and the settings it would run with."""
    with monkeypatch.context() as env:
        for f in fields(Settings):
            env.delenv(env_name(f.name), raising=False)
        for name, value in environment(objects, container).items():
            env.setenv(name, value)
        argv = container["command"][1:] + container.get("args", [])
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                namespace = cli.build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{PROGRAM} {' '.join(argv)}: {errors.getvalue()}")
    return argv[0], from_namespace(namespace)


def port_of(address: str) -> int:
    return split_address(address)[1]


def bytes_of(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity)
    assert match, f"a quantity this test does not read: {quantity}"
    return int(match[1]) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[match[2]]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


@pytest.fixture
def serving(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    subcommand, settings = effective(objects, server(objects), monkeypatch)
    assert subcommand == "serve"
    return settings


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(objects: list[dict[str, Any]], version: str) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service", "Service"]
        + ["Secret"] * 4
    )
    for obj in objects:
        # strict: a field the schema does not have (a misspelled one) is an error too
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_schemas_refuse_a_misspelled_field(objects: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(one(objects, "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_kustomization_lists_every_file_of_the_folder() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in FOLDER.iterdir()} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_every_container_runs_this_release_s_image(objects: list[dict[str, Any]]) -> None:
    images = {c["image"] for o in objects for c in containers(o)}
    assert images == {f"campaign-grpc:{VERSION}"}


def test_every_flag_and_variable_is_one_of_the_server(objects: list[dict[str, Any]]) -> None:
    assert command_problems(objects) == []


def test_a_flag_or_variable_the_server_lacks_is_found(objects: list[dict[str, Any]]) -> None:
    changed = copy.deepcopy(objects)
    server(changed)["args"].append("--health-port=8081")
    one(changed, "ConfigMap")["data"]["CAMPAIGN_GRPC_SHUTDOWN_TIMEOUT"] = "20"
    one(changed, "Job")["spec"]["template"]["spec"]["containers"][0]["args"] = ["--listen=:1"]
    assert sorted(command_problems(changed)) == [
        "Deployment campaign-grpc: serve has no flag --health-port",
        "Deployment campaign-grpc: serve has no setting CAMPAIGN_GRPC_SHUTDOWN_TIMEOUT",
        "Job campaign-grpc-migrate: migrate has no flag --listen",
    ]
    server(changed)["command"] = [PROGRAM, "server"]
    assert "Deployment campaign-grpc: campaign-grpc server is no command of the server" in (
        command_problems(changed)
    )


def test_the_servers_settings_parse_and_work_together(serving: Settings) -> None:
    assert conflicts(serving) == []
    assert exposure_problem(serving) is None
    assert serving.database_url.startswith("postgresql://")
    assert serving.tls_cert
    assert serving.tls_key
    assert serving.auth_tokens


def test_servers_do_not_migrate_and_the_job_does_with_another_role(
    objects: list[dict[str, Any]], serving: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert serving.migrate is False
    job = one(objects, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    subcommand, migrating = effective(objects, container, monkeypatch)
    assert subcommand == "migrate"
    assert migrating.database_url.startswith("postgresql://")
    assert migrating.database_url != serving.database_url


def test_probes_ask_the_health_port_for_the_health_names(
    objects: list[dict[str, Any]], serving: Settings
) -> None:
    container = server(objects)
    health_port = port_of(serving.health_listen)
    probes = {k: container[k]["grpc"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {health_port}
    assert probes["startupProbe"].get("service", "") == ""
    assert probes["livenessProbe"].get("service", "") == ""
    assert probes["readinessProbe"]["service"] == SERVICE_NAME


def test_ports_and_services_match_the_addresses(
    objects: list[dict[str, Any]], serving: Settings
) -> None:
    deployment = one(objects, "Deployment")
    ports = {p["name"]: p["containerPort"] for p in server(objects)["ports"]}
    assert ports == {
        "grpc": port_of(serving.listen),
        "health": port_of(serving.health_listen),
        "metrics": port_of(serving.metrics_listen),
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(scrape["prometheus.io/port"]) == ports["metrics"]
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]]
    headless = one(objects, "Service", "campaign-grpc-headless")
    assert headless["spec"]["clusterIP"] == "None"
    # Its clients dial the pods' addresses: the port they are given must be the pods'.
    assert [p["port"] for p in headless["spec"]["ports"]] == [ports["grpc"]]


def test_three_replicas_spread_over_nodes_and_disrupted_one_at_a_time(
    objects: list[dict[str, Any]],
) -> None:
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    by_node = [s for s in spread if s["topologyKey"] == "kubernetes.io/hostname"]
    assert [s["whenUnsatisfiable"] for s in by_node] == ["DoNotSchedule"]
    assert by_node[0]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 2


def test_files_named_by_flags_are_mounted_from_secrets_that_have_them(
    objects: list[dict[str, Any]], serving: Settings, tmp_path: Path
) -> None:
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in server(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name in ("tls_cert", "tls_key", "auth_tokens"):
        path = Path(getattr(serving, name))
        volume = volumes[mounts[str(path.parent)]]
        secret_value(objects, volume["secret"]["secretName"], path.name)
    # The example token file is one the server reads.
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(secret_value(objects, "campaign-grpc-tokens", "tokens.txt"))
    assert len(TokenFile(str(tokens)).table.entries) == 1


def test_the_pod_outlives_its_drain(objects: list[dict[str, Any]], serving: Settings) -> None:
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    pre_stop = server(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + serving.shutdown_grace


def test_the_memory_limit_holds_what_the_settings_allow(
    objects: list[dict[str, Any]], serving: Settings
) -> None:
    resources = server(objects)["resources"]
    most = (
        IDLE_BYTES
        + serving.cache_bytes
        + serving.max_watch_streams * WATCH_STREAM_BYTES
        + serving.max_watch_unread_bytes
        + REQUEST_MEMORY_FACTOR * serving.max_request_bytes_in_flight
    )
    assert bytes_of(resources["limits"]["memory"]) >= most
    assert bytes_of(resources["requests"]["memory"]) > IDLE_BYTES


def test_every_pod_runs_as_the_image_s_user_without_privileges(
    objects: list[dict[str, Any]],
) -> None:
    dockerfile = ROOT / "Dockerfile"
    if dockerfile.exists():
        assert str(IMAGE_UID) in dockerfile.read_text()
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        # Else Kubernetes adds a variable per Service and port, named after the Service
        # campaign-grpc: CAMPAIGN_GRPC_SERVICE_HOST, CAMPAIGN_GRPC_PORT, ...
        assert spec["enableServiceLinks"] is False
        for container in containers(obj):
            context = container["securityContext"]
            assert context.get("runAsUser", pod.get("runAsUser", IMAGE_UID)) == IMAGE_UID
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}


# -- the manifests' commands, run ---------------------------------------------------------


@pytest.fixture
def rows_role(postgres_url: str) -> Iterator[str]:
    """A login role owning nothing, for the servers' database URL."""
    role = f"campaigns_app_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def documented_grants(runtime: str, owner: str) -> list[str]:
    """The statements secrets.example.yaml's comments give the runtime role its rights with."""
    comments = " ".join(
        line.lstrip("# ")
        for line in (FOLDER / "secrets.example.yaml").read_text().splitlines()
        if line.startswith("#")
    )
    statements = re.findall(r"\b(?:GRANT|ALTER DEFAULT PRIVILEGES)\b[^;]*;", comments)
    assert len(statements) == 4, statements
    return [
        s.replace("campaigns_app", f'"{runtime}"').replace("campaigns_owner", f'"{owner}"')
        for s in statements
    ]


def read_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        body: bytes = answer.read()
    return body


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}").geturl()


def local_command(
    objects: list[dict[str, Any]], container: dict[str, Any], root: Path
) -> tuple[list[str], dict[str, int]]:
    """The container's arguments with its Secret volumes' files under root and its ports free
    ones, and those ports by flag."""
    volumes = {
        v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    args = list(container["args"])
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        directory = root / mount["name"]
        directory.mkdir()
        for key, value in one(objects, "Secret", secret["secretName"])["stringData"].items():
            (directory / key).write_text(value)
        args = [a.replace(mount["mountPath"], str(directory)) for a in args]
    ports = {}
    for i, arg in enumerate(args):
        flag, _, address = arg.partition("=")
        if flag in ("--listen", "--health-listen", "--metrics-listen"):
            ports[flag] = free_port()
            args[i] = f"{flag}={split_address(address)[0]}:{ports[flag]}"
    return args, ports


async def test_the_job_migrates_and_the_deployment_serves_as_written(
    objects: list[dict[str, Any]], postgres_url: str, rows_role: str, tmp_path: Path
) -> None:
    job = one(objects, "Job")["spec"]["template"]["spec"]["containers"][0]
    job_env = environment(objects, job) | {"CAMPAIGN_GRPC_DATABASE_URL": postgres_url}
    code, output = run(*job["command"][1:], *job.get("args", []), env=job_env)
    assert code == 0, output
    owner = urlsplit(postgres_url).username or "postgres"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for statement in documented_grants(rows_role, owner):
            db.execute(statement.encode())

    container = server(objects)
    args, ports = local_command(objects, container, tmp_path)
    # The example TLS Secret holds placeholders: a certificate for 127.0.0.1 in their place.
    ca = Authority(tmp_path, "ca")
    issued = ca.issue("server", server=True)
    (tmp_path / "tls" / "tls.crt").write_bytes(issued.cert.read_bytes())
    (tmp_path / "tls" / "tls.key").write_bytes(issued.key.read_bytes())
    env = environment(objects, container)
    env["CAMPAIGN_GRPC_DATABASE_URL"] = as_role(postgres_url, rows_role)
    proc = Process(args, tmp_path / "serve.log", env)
    try:
        health = f"127.0.0.1:{ports['--health-listen']}"
        await wait_serving(health, proc, within=30)
        async with grpc.aio.insecure_channel(health) as probe:
            checks = health_pb2_grpc.HealthStub(probe)

            # Readiness: a write of this server's own commits with the rows-only role.
            async def ready() -> bool:
                request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                answer = await checks.Check(request, timeout=5)
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

            await eventually(ready, within=30)
        credentials = grpc.ssl_channel_credentials(ca.ca.cert.read_bytes())
        target = f"127.0.0.1:{ports['--listen']}"
        async with grpc.aio.secure_channel(target, credentials) as channel:
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetCampaign(
                    pb.GetCampaignRequest(customer_id=new_id(), id=new_id()),
                    metadata=(("authorization", "Bearer example-token"),),
                    timeout=10,
                )
            # Through TLS and the example token, to the database.
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        metrics = f"http://127.0.0.1:{ports['--metrics-listen']}/metrics"
        assert b"grpc_server_handled_total" in await asyncio.to_thread(read_url, metrics)
        proc.terminate()
        assert await proc.exit_code(within=15) == 0, proc.log
    finally:
        proc.kill()
    first_line = proc.log.splitlines()[0]
    assert json.loads(first_line)["level"], first_line


def test_the_objects_the_docs_name_exist(objects: list[dict[str, Any]]) -> None:
    docs = documents.text() + "".join(p.read_text() for p in sorted(FOLDER.iterdir()))
    assert "kubectl apply -k deploy/kubernetes" in docs
    named = set(re.findall(r"\b(job|deployment)/([a-z0-9-]+)", docs))
    assert named
    have = {(o["kind"].lower(), o["metadata"]["name"]) for o in objects}
    assert named <= have
