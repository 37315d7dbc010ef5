"""What protects a server: TLS files, the token file, and the refusal to serve unprotected.

A server that listens beyond loopback with neither TLS nor tokens lets anyone who reaches the
port read and change every customer's campaigns; it refuses to start unless told --insecure.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings, split_address
from .auth import TokenFile, TokenFileError


class Refused(Exception):
    """Settings a server refuses to start with; problems says each reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None  # clients must present a certificate signed by it


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost may resolve to anything
        return False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _read_pem(settings: Settings, name: str, marker: bytes, problems: list[str]) -> bytes:
    path = getattr(settings, name)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        problems.append(f"{_flag(name)}: cannot read {path}: {exc.strerror or exc}")
        return b""
    if marker not in data:
        problems.append(f"{_flag(name)}: {path} holds no PEM {marker.decode().lower()}")
    return data


def _tls_problems(settings: Settings) -> list[str]:
    problems = []
    if settings.tls_cert and not settings.tls_key:
        problems.append("--tls-cert needs --tls-key, the certificate's private key")
    if settings.tls_key and not settings.tls_cert:
        problems.append("--tls-key needs --tls-cert, the certificate it is the key of")
    if settings.tls_client_ca and not (settings.tls_cert and settings.tls_key):
        problems.append(
            "--tls-client-ca needs --tls-cert and --tls-key: client certificates are "
            "checked only over TLS"
        )
    return problems


def _read_tls(settings: Settings, problems: list[str]) -> TLSFiles | None:
    tls_problems = _tls_problems(settings)
    problems += tls_problems
    if tls_problems or not settings.tls_cert:
        return None
    cert = _read_pem(settings, "tls_cert", b"CERTIFICATE", problems)
    key = _read_pem(settings, "tls_key", b"PRIVATE KEY", problems)
    client_ca = None
    if settings.tls_client_ca:
        client_ca = _read_pem(settings, "tls_client_ca", b"CERTIFICATE", problems)
    return TLSFiles(cert, key, client_ca)


def _read_tokens(settings: Settings, problems: list[str]) -> TokenFile | None:
    if not settings.auth_tokens:
        return None
    try:
        return TokenFile(settings.auth_tokens)
    except OSError as exc:
        problems.append(f"--auth-tokens: cannot read {settings.auth_tokens}: {exc.strerror}")
    except (UnicodeDecodeError, TokenFileError) as exc:
        problems.append(f"--auth-tokens: {exc}")
    return None


def exposure_problem(settings: Settings) -> str | None:
    """Why serving on --listen as configured is refused, or None when it is not."""
    try:
        host, _ = split_address(settings.listen)
    except ValueError:
        return None  # reported as a problem of --listen itself
    if is_loopback(host) or settings.insecure or settings.tls_cert or settings.auth_tokens:
        return None
    return (
        f"--listen {settings.listen} is beyond loopback, and there is neither TLS "
        "(--tls-cert, --tls-key) nor authentication (--auth-tokens): anyone who reaches "
        "the port could read and change every customer's campaigns; pass --insecure to "
        "serve there anyway"
    )


@dataclass(frozen=True, slots=True)
class Protection:
    tls: TLSFiles | None
    tokens: TokenFile | None


def _read(settings: Settings) -> tuple[Protection, list[str]]:
    found: list[str] = []
    tls = _read_tls(settings, found)
    tokens = _read_tokens(settings, found)
    return Protection(tls, tokens), found


def file_problems(settings: Settings) -> list[str]:
    """What is wrong with the TLS and token files the settings name."""
    return _read(settings)[1]


def load(settings: Settings) -> Protection:
    """The TLS files and tokens the settings name; Refused with every problem found."""
    protection, found = _read(settings)
    exposure = exposure_problem(settings)
    if exposure is not None:
        found.append(exposure)
    if found:
        raise Refused(found)
    return protection


def tokens_in_plaintext(settings: Settings) -> bool:
    """Tokens beyond loopback without TLS: anyone on the path can read them off the wire."""
    host = settings.listen.rpartition(":")[0].strip("[]")
    return bool(settings.auth_tokens) and not settings.tls_cert and not is_loopback(host)
