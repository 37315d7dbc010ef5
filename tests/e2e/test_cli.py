"""The campaign-grpc command: --help, migrate and check-config, run as a user runs them."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from campaign_grpc.settings import Settings, conflicts, env_name
from campaign_grpc.storage.schema import SCHEMA_VERSION
from e2e_helpers import run


def test_help_names_the_commands_and_the_environment_twins() -> None:
    code, out = run("--help")
    assert code == 0, out
    for command in ("serve", "migrate", "check-config"):
        assert command in out
    assert "CAMPAIGN_GRPC_STOP_GRACE=30" in out

    code, out = run("check-config", "--help")
    assert code == 0, out
    for f in dataclasses.fields(Settings):
        assert "--" + f.name.replace("_", "-") in out, f.name
        assert env_name(f.name) in out, f.name

    code, out = run("migrate", "--help")
    assert code == 0, out
    assert "--database-url" in out
    assert "--listen" not in out


def test_migrate_creates_then_keeps_the_schema_and_prints_its_version(tmp_path: Path) -> None:
    database = tmp_path / "data" / "campaigns.db"
    url = f"sqlite:///{database}"

    code, out = run("migrate", "--database-url", url)
    assert code == 0, out
    assert f"database schema version {SCHEMA_VERSION} (upgraded from 0)" in out
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"campaign", "event", "meta"} <= tables

    code, out = run("migrate", env={"CAMPAIGN_GRPC_DATABASE_URL": url})
    assert code == 0, out
    assert f"database schema version {SCHEMA_VERSION} (already current)" in out


def test_check_config_prints_each_setting_with_its_source_and_creates_nothing(
    tmp_path: Path,
) -> None:
    code, out = run(
        "check-config",
        "--listen",
        "0.0.0.0:6000",
        "--metrics-listen=127.0.0.1:9464",
        env={"CAMPAIGN_GRPC_STOP_GRACE": "30", "CAMPAIGN_GRPC_LISTEN": "127.0.0.1:1"},
        cwd=tmp_path,
    )
    assert code == 0, out
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in out.splitlines()}
    assert lines["listen"].split() == ["0.0.0.0:6000", "(flag", "--listen)"]
    assert lines["metrics_listen"].split() == ["127.0.0.1:9464", "(flag", "--metrics-listen)"]
    assert lines["stop_grace"].split() == ["30.0", "(env", "CAMPAIGN_GRPC_STOP_GRACE)"]
    assert lines["database_url"].split() == ["sqlite:///campaigns.db", "(default)"]
    assert lines["read_threads"].split() == ["1", "(by", "database)", "(default)"]
    assert "does not exist yet" in lines["database:"]
    assert out.rstrip().endswith("configuration OK")
    assert list(tmp_path.iterdir()) == []


def test_check_config_names_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    code, out = run("check-config", "--listen", "nowhere", "--database-url", "mysql://db/x")
    assert code == 1, out
    assert "--listen: expected HOST:PORT, got 'nowhere'" in out
    expected = "expected sqlite:///FILE or postgresql://HOST/DATABASE, got 'mysql://db/x'"
    assert f"--database-url: {expected}" in out
    assert "configuration OK" not in out

    # Nothing listens on port 1.
    code, out = run("check-config", "--database-url", "postgresql://127.0.0.1:1/campaigns")
    assert code == 1, out
    assert "--database-url: PostgreSQL does not answer" in out

    code, out = run("check-config", env={"CAMPAIGN_GRPC_HEARTBEAT_INTERVAL": "soon"})
    assert code == 2, out
    assert "invalid value 'soon' (from CAMPAIGN_GRPC_HEARTBEAT_INTERVAL)" in out

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    code, out = run("check-config", "--database-url", f"sqlite:///{garbage}")
    assert code == 1, out
    assert "is not a readable SQLite database" in out


def test_a_database_from_a_newer_release_is_refused_by_every_command(tmp_path: Path) -> None:
    database = tmp_path / "campaigns.db"
    url = f"sqlite:///{database}"
    assert run("migrate", "--database-url", url)[0] == 0
    with sqlite3.connect(database) as db:
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")

    code, out = run("check-config", "--database-url", url)
    assert (code, "schema version 99, newer than this release" in out) == (1, True), out
    code, out = run("migrate", "--database-url", url)
    assert (code, "this release knows" in out) == (1, True), out
    code, out = run("serve", "--listen", "127.0.0.1:0", "--database-url", url)
    assert (code, "this release knows" in out, "Traceback" in out) == (1, True, False), out


def test_check_config_names_budgets_that_contradict_each_other() -> None:
    code, out = run(
        "check-config",
        "--max-unary-in-flight",
        "500",
        env={"CAMPAIGN_GRPC_MAX_UNARY_WRITES_IN_FLIGHT": "600"},
    )
    assert code == 1, out
    assert "--max-unary-writes-in-flight 600 is more than --max-unary-in-flight 500" in out
    assert "configuration OK" not in out

    code, out = run("check-config", "--max-streams-per-connection", "1000")
    assert code == 1, out
    assert "--max-streams-per-connection 1000 is less than what one client may hold" in out
    assert "2000 WatchStatus streams" in out


def test_serve_refuses_contradicting_settings_with_exit_code_2(tmp_path: Path) -> None:
    database = tmp_path / "campaigns.db"
    code, out = run(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        f"sqlite:///{database}",
        "--max-unary-in-flight",
        "100",
        "--max-unary-writes-in-flight",
        "750",
        "--max-unary-in-flight-per-customer",
        "100",
    )
    assert code == 2, out
    assert "serve: --max-unary-writes-in-flight 750 is more than --max-unary-in-flight 100" in out
    assert "Traceback" not in out
    assert not database.exists()


def test_the_default_settings_agree_with_each_other() -> None:
    assert conflicts(Settings()) == []
    # One client of one customer holds all its watches and its calls on one connection.
    defaults = Settings()
    assert defaults.max_streams_per_connection >= (
        defaults.max_watch_streams_per_customer + defaults.max_unary_in_flight_per_customer
    )
