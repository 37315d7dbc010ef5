"""Opaque page tokens, bound to the filters of the listing that made them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

from .errors import FieldViolation, InvalidArgument
from .types import EventFilter, ListFilter

Filter = ListFilter | EventFilter

_FORMAT = struct.Struct(">BQ8s")
_VERSION = 1
# Positions are the store's 64-bit signed keys: a larger one was never ours (SQLite refuses
# to bind it at all).
_MAX_SEQ = 2**63 - 1


def _fingerprint(f: Filter) -> bytes:
    if isinstance(f, ListFilter):
        key = f"{f.customer_id}|{int(f.status)}|{int(f.type)}|{int(f.show_deleted)}"
    else:  # a listing of events: its tokens are never taken for a listing of campaigns
        key = f"events|{f.customer_id}|{f.campaign_id}"
    return hashlib.blake2b(key.encode(), digest_size=8, person=b"campaign-page").digest()


def encode(f: Filter, after_seq: int) -> str:
    raw = _FORMAT.pack(_VERSION, after_seq, _fingerprint(f))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _invalid(why: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", why)], reason="INVALID_PAGE_TOKEN")


def decode(token: str, f: Filter) -> int:
    """The position a token continues after; InvalidArgument when it is not ours or not for f."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, after_seq, fingerprint = _FORMAT.unpack(raw)
    except (binascii.Error, ValueError, struct.error):
        raise _invalid("is not a page token of this service") from None
    # The decoder skips characters outside the alphabet: only our own spelling is a token.
    if (
        version != _VERSION
        or after_seq > _MAX_SEQ
        or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token
    ):
        raise _invalid("is not a page token of this service")
    if fingerprint != _fingerprint(f):
        raise _invalid("was made with other filters: repeat the request's filters to page on")
    return int(after_seq)
