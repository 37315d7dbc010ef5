"""Reads the JSON lines of dialer processes (tests/dialer_process.py, tests/go/dialerprocess)
into dial intervals: each campaign's stretches of dialing per dialer, with the lease's
fencing token, ended by a drain, the process's death, or the moment its lease lapsed by its
own count (a process frozen past its ttl dials nothing from then on, by the kit's contract;
the Python process writes that moment, the Go one does not). Times are the wall clock's."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stretch:
    dialer: str
    campaign_id: str
    token: int
    start: float
    end: float


def _events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.endswith("}"):
            out.append(json.loads(line))
    return out


def stretches(dialer: str, path: Path, died_at: float | None, now: float) -> list[Stretch]:
    events = _events(path)
    out: list[Stretch] = []
    for i, e in enumerate(events):
        if e["event"] != "dial":
            continue
        campaign = str(e["campaign"])
        valid = float(e.get("valid_until", math.inf))  # type: ignore[arg-type]
        start = float(e["t"])  # type: ignore[arg-type]
        end = min(now, died_at) if died_at is not None else now
        for later in events[i + 1 :]:
            t = float(later["t"])  # type: ignore[arg-type]
            if t > valid:
                end = min(end, valid)
                break
            if later["event"] == "valid":
                valid = float(later["valid_until"])  # type: ignore[arg-type]
            elif later["event"] == "drain" and later["campaign"] == campaign:
                end = min(end, t)
                break
        else:
            end = min(end, valid)
        out.append(Stretch(dialer, campaign, int(e["token"]), start, end))  # type: ignore[call-overload]
    return out


def overlaps(all_stretches: list[Stretch]) -> list[tuple[Stretch, Stretch]]:
    found = []
    for a in all_stretches:
        for b in all_stretches:
            if a.campaign_id != b.campaign_id or a.dialer >= b.dialer:
                continue
            if a.start < b.end and b.start < a.end:
                found.append((a, b))
    return found


def longest_gap(
    all_stretches: list[Stretch], campaign_id: str, since: float, until: float
) -> float:
    covered = sorted((s.start, s.end) for s in all_stretches if s.campaign_id == campaign_id)
    longest, at = 0.0, since
    for start, end in covered:
        if start > at:
            longest = max(longest, start - at)
        at = max(at, end)
    return max(longest, until - at)


def tokens_grow(all_stretches: list[Stretch]) -> bool:
    """A later holder of a campaign holds a larger fencing token than an earlier other one."""
    by_campaign: dict[str, list[Stretch]] = {}
    for s in all_stretches:
        by_campaign.setdefault(s.campaign_id, []).append(s)
    for items in by_campaign.values():
        items.sort(key=lambda s: s.start)
        for earlier, later in itertools.pairwise(items):
            if earlier.dialer != later.dialer and later.token <= earlier.token:
                return False
    return True
