"""Settings each valid alone that cannot work together."""

from __future__ import annotations

from ._fields import Settings


class Conflicting(ValueError):
    """Settings each valid alone that cannot work together; problems says each reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _share_problem(s: Settings, part: str, whole: str, why: str) -> list[str]:
    """A budget that is a share of another, set larger than it: the larger one never binds."""
    if getattr(s, part) <= getattr(s, whole):
        return []
    return [
        f"{_flag(part)} {getattr(s, part)} is more than {_flag(whole)} {getattr(s, whole)}: {why}"
    ]


def conflicts(s: Settings) -> list[str]:
    """What the limits and budgets of s say against each other, each named with its flags."""
    problems = _share_problem(
        s,
        "max_unary_writes_in_flight",
        "max_unary_in_flight",
        "writes are a share of the unary calls, and the rest is kept for reads",
    )
    problems += _share_problem(
        s,
        "max_unary_in_flight_per_customer",
        "max_unary_in_flight",
        "one customer's calls are a share of the server's",
    )
    problems += _share_problem(
        s,
        "max_watch_streams_per_customer",
        "max_watch_streams",
        "one customer's WatchStatus streams are a share of the server's",
    )
    problems += _share_problem(
        s,
        "max_watch_unread_bytes_per_customer",
        "max_watch_unread_bytes",
        "one customer's unread WatchStatus messages are a share of the server's",
    )
    # One client of one customer may hold this many streams, and grpc clients put them all on
    # one connection: past the connection's cap its HTTP/2 layer queues every further call,
    # unary ones included, until they run out of time.
    held = min(s.max_watch_streams_per_customer, s.max_watch_streams)
    one_client = held + s.max_unary_in_flight_per_customer
    if s.max_streams_per_connection < one_client:
        problems.append(
            f"--max-streams-per-connection {s.max_streams_per_connection} is less than what "
            f"one client may hold on its connection: {held} WatchStatus streams "
            "(--max-watch-streams-per-customer) and "
            f"{s.max_unary_in_flight_per_customer} unary calls "
            f"(--max-unary-in-flight-per-customer), {one_client}; its calls past the cap "
            "would wait in its own HTTP/2 layer until their deadline"
        )
    return problems


def check(s: Settings) -> None:
    """Raises Conflicting when the settings cannot work together."""
    problems = conflicts(s)
    if problems:
        raise Conflicting(problems)
