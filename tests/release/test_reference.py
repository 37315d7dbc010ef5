"""The reference pages of the documentation, made from the code (tools/reference.py): complete,
and the table of error reasons true to the errors the server raises."""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest

from campaign_grpc.domain import errors
from campaign_grpc.domain.reasons import ERROR_REASONS
from campaign_grpc.settings import Settings, env_name, shown

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "src" / "campaign_grpc"


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reference", ROOT / "tools" / "reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_is_in_the_reference_with_its_variable_and_default(
    reference: ModuleType,
) -> None:
    rows = reference.settings_page().splitlines()
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        help = reference._cell(f.metadata["help"])
        assert f"| `{flag}` | `{env_name(f.name)}` | `{shown(f.default)}` | {help} |" in rows


def test_every_reason_is_in_the_reference_with_its_code(reference: ModuleType) -> None:
    page = reference.errors_page()
    for r in ERROR_REASONS:
        assert f"| `{r.reason}` | `{r.code}` |" in page


def _raised_reasons() -> set[tuple[str, str]]:
    """(reason, code) of every error the server makes with a reason it names, or its class's
    default reason: the calls of a CampaignError class anywhere in the server's code."""
    classes = {
        name: c
        for name, c in vars(errors).items()
        if isinstance(c, type) and issubclass(c, errors.CampaignError)
    }
    found = set()
    for path in SERVER.rglob("*.py"):
        if "client" in path.relative_to(SERVER).parts:
            continue  # errors the client makes of its own, never sent by a server
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in classes:
                continue
            reason = next((k.value for k in node.keywords if k.arg == "reason"), None)
            if reason is None:
                found.add((classes[name].default_reason, classes[name].code))
            elif isinstance(reason, ast.Constant):
                found.add((reason.value, classes[name].code))
    return found


def test_the_table_of_reasons_holds_every_reason_the_server_raises() -> None:
    table = {(r.reason, r.code) for r in ERROR_REASONS}
    raised = _raised_reasons()
    assert len(raised) > 40
    assert raised - table == set()


def test_every_reason_of_the_table_is_one_the_server_sends() -> None:
    # Some reasons come through a variable (a violation's type, a lease session's end): each
    # one is still a literal somewhere in the server's code.
    code = "\n".join(
        p.read_text() for p in SERVER.rglob("*.py") if "client" not in p.relative_to(SERVER).parts
    )
    names = [r.reason for r in ERROR_REASONS]
    assert [n for n in names if f'"{n}"' not in code] == []
    pairs = [(r.reason, r.code) for r in ERROR_REASONS]
    assert len(set(pairs)) == len(pairs)


def test_the_flags_the_reasons_name_exist() -> None:
    flags = {"--" + f.name.replace("_", "-") for f in fields(Settings)}
    named = {m for r in ERROR_REASONS for m in re.findall(r"--[a-z][a-z-]+", r.meaning)}
    assert named
    assert named - flags == set()


def test_every_rpc_is_in_the_reference_with_its_types_and_documentation(
    reference: ModuleType,
) -> None:
    files = reference.descriptor_set()
    page = reference.rpcs_page(files)
    (file,) = [f for f in files.file if f.service]
    (service,) = file.service
    assert f"## campaign.v1.{service.name}" in page
    methods = [m.name for m in service.method]
    assert {"CreateCampaign", "WatchStatus", "ConfirmDrained", "HoldLeases"} <= set(methods)
    for m in service.method:
        header = f"### {m.name}\n\n`rpc {m.name}` ("
        assert header in page
        section = page.split(header, 1)[1].split("\n### ", 1)[0]
        assert m.input_type.lstrip(".") in section.split(" returns ")[0]
        assert m.output_type.lstrip(".") in section.split(" returns ")[1]
        assert "Errors:" in section or m.name in {"WatchStatus"}, m.name
    assert "`rpc WatchStatus` ([`campaign.v1.WatchStatusRequest`]" in page
    assert "returns (stream [`campaign.v1.WatchStatusResponse`]" in page
    for message in file.message_type:
        assert f"### campaign.v1.{message.name}\n" in page
    assert "| `stop_revision` | `int64` | 18 |" in page
