"""What a server refuses to start with: unusable TLS or token files, and exposure without either."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from campaign_grpc.ops import security
from campaign_grpc.ops.server import App
from campaign_grpc.settings import Settings
from e2e_helpers import run


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("::ffff:10.1.2.3", False),
        ("campaigns.internal", False),
    ],
)
def test_loopback_is_what_only_this_machine_reaches(host: str, loopback: bool) -> None:
    assert security.is_loopback(host) is loopback


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "10.1.2.3:50051"])
def test_serving_beyond_loopback_needs_tls_or_tokens_or_insecure(
    tmp_path: Path, listen: str
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# no tokens issued yet\n")
    bare = Settings(listen=listen, database_url=f"sqlite:///{tmp_path / 'campaigns.db'}")

    refusal = security.exposure_problem(bare)
    assert refusal is not None
    assert f"--listen {listen} is beyond loopback" in refusal
    assert "--insecure" in refusal
    with pytest.raises(security.Refused) as raised:
        App(bare)
    assert raised.value.problems == [refusal]
    assert not (tmp_path / "campaigns.db").exists()

    for protected in (
        dataclasses.replace(bare, insecure=True),
        dataclasses.replace(bare, auth_tokens=str(tokens)),
        dataclasses.replace(bare, tls_cert="server.pem", tls_key="server.key"),
    ):
        assert security.exposure_problem(protected) is None
    assert security.exposure_problem(dataclasses.replace(bare, listen="127.0.0.1:0")) is None


def test_tls_files_must_come_in_pairs_and_be_readable_pem(tmp_path: Path) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    missing = tmp_path / "missing.pem"
    cases = [
        ({"tls_cert": str(not_pem)}, ["--tls-cert needs --tls-key"]),
        ({"tls_key": str(not_pem)}, ["--tls-key needs --tls-cert"]),
        ({"tls_client_ca": str(not_pem)}, ["--tls-client-ca needs --tls-cert and --tls-key"]),
        (
            {"tls_cert": str(missing), "tls_key": str(not_pem)},
            [
                f"--tls-cert: cannot read {missing}: No such file or directory",
                f"--tls-key: {not_pem} holds no PEM private key",
            ],
        ),
        (
            {"tls_cert": str(not_pem), "tls_key": str(not_pem), "tls_client_ca": str(missing)},
            [
                f"--tls-cert: {not_pem} holds no PEM certificate",
                f"--tls-key: {not_pem} holds no PEM private key",
                f"--tls-client-ca: cannot read {missing}: No such file or directory",
            ],
        ),
        ({"auth_tokens": str(missing)}, [f"--auth-tokens: cannot read {missing}"]),
    ]
    for changes, expected in cases:
        found = security.file_problems(Settings(**changes))  # type: ignore[arg-type]
        assert len(found) == len(expected), found
        for problem, start in zip(found, expected, strict=True):
            assert problem.startswith(start), (changes, found)


@pytest.mark.e2e  # runs the command as processes
def test_the_command_refuses_to_serve_beyond_loopback_unprotected(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'campaigns.db'}"

    code, out = run("serve", "--listen", "0.0.0.0:0", "--database-url", url)
    assert code == 2, out
    assert "campaign-grpc serve: --listen 0.0.0.0:0 is beyond loopback" in out
    assert "Traceback" not in out
    assert not (tmp_path / "campaigns.db").exists()

    code, out = run("check-config", "--listen", "[::]:0", "--database-url", url)
    assert code == 0, out
    assert "warning: serve refuses to start: --listen [::]:0 is beyond loopback" in out

    for flags, env, source in [
        (["--insecure"], {}, "(flag --insecure)"),
        ([], {"CAMPAIGN_GRPC_INSECURE": "on"}, "(env CAMPAIGN_GRPC_INSECURE)"),
        (["--insecure", "on"], {"CAMPAIGN_GRPC_INSECURE": "off"}, "(flag --insecure)"),
    ]:
        args = ("check-config", "--listen", "0.0.0.0:0", "--database-url", url, *flags)
        code, out = run(*args, env=env)
        assert code == 0, out
        assert "warning" not in out
        lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in out.splitlines()}
        assert lines["insecure"].split(maxsplit=1) == ["on", source]

    code, out = run("check-config", "--tls-cert", str(tmp_path / "nope.pem"), "--database-url", url)
    assert code == 1, out
    assert "--tls-cert needs --tls-key" in out
