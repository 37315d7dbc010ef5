"""The released contract in contract/ catches a breaking change of campaign.v1 (make lint)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
CONTRACT = ROOT / "contract" / "campaign-v1.binpb"
PROTO = Path("protos/campaign/v1/campaign.proto")


@pytest.fixture
def module(tmp_path: Path) -> Path:
    """A copy of the buf module (buf.yaml and protos/) to change."""
    assert BUF.exists(), "run `make lint` or `npm ci` first"
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    return tmp_path


def breaking(module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "--against", str(CONTRACT)],
        cwd=module,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def edit(module: Path, old: str, new: str) -> None:
    proto = module / PROTO
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new, 1))


def test_an_added_field_keeps_the_contract(module: Path) -> None:
    edit(
        module,
        "message WatchStatusRequest {\n",
        "message WatchStatusRequest {\n  // Added by a test.\n  bool added_by_a_test = 999;\n",
    )
    done = breaking(module)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_removed_service_breaks_the_contract(module: Path) -> None:
    edit(module, "service CampaignService {", "service CampaignServiceRenamed {")
    done = breaking(module)
    assert done.returncode != 0
    assert 'Previously present service "CampaignService" was deleted' in done.stdout + done.stderr


def test_the_method_options_added_since_the_release_keep_the_contract(module: Path) -> None:
    done = breaking(module)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_raised_idempotency_level_breaks_the_contract(module: Path) -> None:
    # Why retry safety is stated in (campaign.v1.traits) rather than as IDEMPOTENT.
    edit(
        module,
        "returns (UndeleteCampaignResponse) {\n    option idempotency_level = IDEMPOTENCY_UNKNOWN;",
        "returns (UndeleteCampaignResponse) {\n    option idempotency_level = IDEMPOTENT;",
    )
    done = breaking(module)
    assert done.returncode != 0
    assert 'changed option "idempotency_level"' in done.stdout + done.stderr
