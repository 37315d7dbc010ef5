"""The JSON text the service stores action options in.

Validation measures an option's size in this text and the store writes it: one encoder, so
that the limit checked is the size stored.
"""

from __future__ import annotations

import json

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def compact_json(value: object) -> str:
    """No spaces, and no escapes for non-ASCII characters: the fewest bytes JSON allows."""
    return _COMPACT.encode(value)
