"""Bearer tokens and what each may do: the token table and the authorization rules.

The token file holds the SHA-256 digest of each token, never a token, so that whoever reads
the file cannot call with it. A line is `<hex digest> <customer_id>` for a token that acts for
one customer, or `<hex digest> *` for a trusted backend that acts for every customer, and may
end with a name for the token: who the changes made with it are recorded as.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..domain.errors import PermissionDenied, Unauthenticated
from ..domain.validation import is_uuid

log = logging.getLogger(__name__)

EVERY_CUSTOMER = "*"
_DIGEST_HEX_LENGTH = 64
# A name is one word of these: it goes into every event and audit line made with the token.
_NAME = re.compile(r"[A-Za-z0-9._@:/+-]{1,64}")


@dataclass(frozen=True, slots=True)
class Grant:
    """Whom a token acts for: one customer, or every customer when customer_id is None; and
    who the token is, as changes made with it are recorded."""

    customer_id: str | None
    principal: str = ""


class TokenFileError(ValueError):
    """A token file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class TokenTable:
    entries: tuple[tuple[bytes, Grant], ...] = ()

    @classmethod
    def parse(cls, text: str, source: str = "token file") -> TokenTable:
        entries: list[tuple[bytes, Grant]] = []
        seen: dict[bytes, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            words = line.partition("#")[0].split()
            if not words:
                continue
            where = f"{source} line {number}"
            if len(words) not in (2, 3):
                raise TokenFileError(
                    f"{where}: expected '<sha256 of the token, hex> <customer_id or *> [name]', "
                    f"got {len(words)} words"
                )
            digest_hex, customer = words[:2]
            name = words[2] if len(words) == 3 else ""
            if name and not _NAME.fullmatch(name):
                raise TokenFileError(
                    f"{where}: a token's name is one word of at most 64 letters, digits and "
                    "._@:/+- characters"
                )
            if len(digest_hex) != _DIGEST_HEX_LENGTH or not _is_hex(digest_hex):
                raise TokenFileError(
                    f"{where}: expected the token's SHA-256 digest as 64 hex digits "
                    '(printf %s "$TOKEN" | sha256sum), not a token'
                )
            if customer != EVERY_CUSTOMER and not is_uuid(customer):
                raise TokenFileError(
                    f"{where}: expected a customer_id (a canonical lowercase UUID) or *"
                )
            digest = bytes.fromhex(digest_hex)
            if digest in seen:
                raise TokenFileError(f"{where}: the same digest as line {seen[digest]}")
            seen[digest] = number
            # A token without a name is known by the start of its digest, never by itself.
            principal = name or f"token:{digest_hex[:12].lower()}"
            grant = Grant(None if customer == EVERY_CUSTOMER else customer, principal)
            entries.append((digest, grant))
        return cls(tuple(entries))

    def grant_for(self, token: str) -> Grant | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: Grant | None = None
        # Every entry is compared, in constant time, so that the time taken says nothing of
        # which entry matched or how much of a digest did.
        for known, grant in self.entries:
            if hmac.compare_digest(digest, known):
                found = grant
        return found


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def read_token_file(path: str) -> TokenTable:
    """The table in the file at path; OSError when it cannot be read, TokenFileError."""
    return TokenTable.parse(Path(path).read_text(encoding="utf-8"), source=path)


class TokenFile:
    """The table read from a file, replaced whole by reload() so a call sees one or the other."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.table = read_token_file(path)

    def reload(self) -> bool:
        """Reads the file again; a file that cannot be used leaves the tokens as they were."""
        try:
            table = read_token_file(self.path)
        except (OSError, UnicodeDecodeError, TokenFileError) as exc:
            log.error("auth tokens not reloaded, the previous ones stay in force: %s", exc)
            return False
        self.table = table
        log.info("auth tokens reloaded from %s: %d tokens", self.path, len(table.entries))
        return True


def authenticate(table: TokenTable, authorization: Sequence[str]) -> Grant:
    """The grant of the bearer token in the authorization metadata values of a call."""
    if not authorization:
        raise Unauthenticated(
            "this server requires a bearer token: send metadata authorization: Bearer <token>",
            reason="TOKEN_MISSING",
        )
    scheme, _, token = authorization[0].strip().partition(" ")
    token = token.strip()
    if len(authorization) > 1 or scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "malformed authorization metadata: expected one value, Bearer <token>",
            reason="TOKEN_MALFORMED",
        )
    grant = table.grant_for(token)
    if grant is None:
        raise Unauthenticated("the bearer token is not known to this server")
    return grant


def authorize(grant: Grant, customer_id: str) -> None:
    """Allows a request that names customer_id; "" stands for every customer (WatchStatus)."""
    if grant.customer_id is None or grant.customer_id == customer_id:
        return
    if not customer_id:
        raise PermissionDenied(
            "the token acts for one customer: name it in customer_id; only a token for every "
            "customer may leave it empty"
        )
    raise PermissionDenied("the token does not act for this customer_id")
