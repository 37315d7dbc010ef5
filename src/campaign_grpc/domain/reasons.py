"""Every ErrorInfo reason the server sends, with its status code, what it means and what to do.

The reference documentation is made from this table, and tests/release/test_reference.py checks it
against the code: each reason an error of the server is raised with is here, under its code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorReason:
    reason: str
    code: str
    meaning: str


def _r(reason: str, code: str, meaning: str) -> ErrorReason:
    return ErrorReason(reason, code, meaning)


_RETRY = "Retry with backoff, or on another replica; nothing was written."
_RESUME = "Resume the watch from the last revision received."
_SNAPSHOT = "Start the watch again from a snapshot (no after_revision)."

ERROR_REASONS: tuple[ErrorReason, ...] = (
    _r(
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "Fields of the request are wrong; the BadRequest detail names every one (the first 20, "
        "metadata omitted_violations counts the rest). Fix them and send again.",
    ),
    _r(
        "INVALID_PAGE_TOKEN",
        "INVALID_ARGUMENT",
        "The page_token is malformed or was made with other filters. Start again without one.",
    ),
    _r(
        "MALFORMED_REQUEST",
        "INVALID_ARGUMENT",
        "The request's bytes are not a valid message of the method, or the call ended before "
        "its request. A client or proxy fault: check the stubs match the contract.",
    ),
    _r(
        "CAMPAIGN_NOT_FOUND",
        "NOT_FOUND",
        "No campaign of this customer has the id (a campaign of another customer is answered "
        "the same).",
    ),
    _r(
        "CAMPAIGN_ALREADY_EXISTS",
        "ALREADY_EXISTS",
        "A campaign with the chosen id exists, of this customer or another (ids are unique "
        "across customers; the answer does not say whose). Choose another id.",
    ),
    _r(
        "ETAG_MISMATCH",
        "ABORTED",
        "The etag sent is stale: the campaign changed since it was read; nothing changed. "
        "Metadata etag holds the current one: read the campaign again, then retry.",
    ),
    _r(
        "CONCURRENT_REQUEST",
        "ABORTED",
        "Another create with the same request_id is being written right now. Retry it: the "
        "retry answers with the first one's campaign.",
    ),
    _r(
        "RUN_CONDITIONS_UNMET",
        "FAILED_PRECONDITION",
        "The campaign cannot run: the PreconditionFailure lists what is missing (an outplan, "
        "an outdial, actions). Complete the campaign, then ask for RUN again.",
    ),
    _r(
        "NEXT_CAMPAIGN_INVALID",
        "FAILED_PRECONDITION",
        "next_campaign_id does not name a live campaign of the customer, or makes a cycle.",
    ),
    _r(
        "OUTDIAL_IN_USE",
        "FAILED_PRECONDITION",
        "Another live campaign uses this outdial_id. Choose another, or delete that campaign.",
    ),
    _r(
        "CAMPAIGN_NOT_STOPPED",
        "FAILED_PRECONDITION",
        "Only a campaign in STATUS_STOP may be deleted. Stop it first.",
    ),
    _r(
        "CAMPAIGN_DELETED",
        "FAILED_PRECONDITION",
        "The campaign is soft-deleted: undelete it before changing or running it.",
    ),
    _r(
        "CAMPAIGN_NOT_RUNNING",
        "FAILED_PRECONDITION",
        "The call needs a running campaign (ReportOutdialExhausted).",
    ),
    _r(
        "CAMPAIGN_REFERENCED",
        "FAILED_PRECONDITION",
        "Live campaigns name this one as their next_campaign_id (the PreconditionFailure lists "
        "up to 20). Change or delete those first.",
    ),
    _r(
        "STOP_REVISION_MISMATCH",
        "FAILED_PRECONDITION",
        "ConfirmDrained named another stop than the campaign's current one: metadata "
        "stop_revision holds the stop to confirm. Drain for that stop, then confirm it.",
    ),
    _r(
        "CAMPAIGN_NOT_STOPPING",
        "FAILED_PRECONDITION",
        "ConfirmDrained on a campaign that is not in STATUS_STOPPING: nothing to confirm.",
    ),
    _r(
        "LEASE_NOT_HELD",
        "FAILED_PRECONDITION",
        "The fencing token is not the campaign's live lease (metadata fencing_token: the live "
        "one's, or 0): this dialer lost the campaign; stop dialing it.",
    ),
    _r(
        "LEASE_SESSION_EXPIRED",
        "FAILED_PRECONDITION",
        "The HoldLeases session expired: its leases are gone. Open a new session.",
    ),
    _r(
        "LEASE_SESSION_TAKEN_OVER",
        "FAILED_PRECONDITION",
        "Another HoldLeases stream took the session over. This one is finished.",
    ),
    _r(
        "REVISION_AHEAD_OF_LOG",
        "OUT_OF_RANGE",
        "after_revision is past the log's head (metadata head_revision): the revision is of "
        f"another database. {_SNAPSHOT}",
    ),
    _r(
        "LOG_TIMELINE_CHANGED",
        "OUT_OF_RANGE",
        "A resume from a revision of a log this one forked from, past the fork (metadata "
        f"timeline, forked_at_revision). {_SNAPSHOT}",
    ),
    _r(
        "REVISION_COMPACTED",
        "OUT_OF_RANGE",
        "The events after after_revision were compacted away (metadata compacted_revision, "
        f"oldest_revision). {_SNAPSHOT}",
    ),
    _r(
        "FULL_VIEW_NOT_RECORDED",
        "OUT_OF_RANGE",
        "WATCH_VIEW_FULL from a revision older than the log keeps campaigns for (metadata "
        f"oldest_revision). {_SNAPSHOT}",
    ),
    _r(
        "DATABASE_CHANGED",
        "OUT_OF_RANGE",
        "The database changed under the server during a watch (metadata head_revision, "
        f"last_revision). {_SNAPSHOT}",
    ),
    _r(
        "WATCH_TOO_SLOW",
        "RESOURCE_EXHAUSTED",
        f"The client read the watch too slowly and its buffer filled. {_RESUME}",
    ),
    _r(
        "REQUEST_TOO_LARGE",
        "RESOURCE_EXHAUSTED",
        "The request is larger than --max-request-bytes (metadata limit, request_bytes).",
    ),
    _r(
        "TOO_MANY_CALLS_IN_FLIGHT",
        "RESOURCE_EXHAUSTED",
        f"The server answers --max-unary-in-flight calls already. {_RETRY}",
    ),
    _r(
        "TOO_MANY_WRITES_IN_FLIGHT",
        "RESOURCE_EXHAUSTED",
        f"The server runs --max-unary-writes-in-flight writes already. {_RETRY}",
    ),
    _r(
        "TOO_MANY_CALLS_IN_FLIGHT_FOR_CUSTOMER",
        "RESOURCE_EXHAUSTED",
        "This customer has --max-unary-in-flight-per-customer calls in flight on this "
        f"server. {_RETRY}",
    ),
    _r(
        "REQUEST_BYTES_IN_FLIGHT",
        "RESOURCE_EXHAUSTED",
        f"The server holds --max-request-bytes-in-flight bytes of requests. {_RETRY}",
    ),
    _r(
        "TOO_MANY_HEALTH_WATCHES",
        "RESOURCE_EXHAUSTED",
        "The server has --max-health-watches grpc.health.v1.Health/Watch streams open. Use "
        "Check instead.",
    ),
    _r(
        "TOO_MANY_WATCH_STREAMS",
        "RESOURCE_EXHAUSTED",
        "The server has --max-watch-streams WatchStatus streams open. Retry with backoff, or "
        "on another replica.",
    ),
    _r(
        "TOO_MANY_WATCH_STREAMS_FOR_CUSTOMER",
        "RESOURCE_EXHAUSTED",
        "This customer has --max-watch-streams-per-customer WatchStatus streams open. Close "
        "one, or share one stream.",
    ),
    _r(
        "WATCH_UNREAD_BYTES",
        "RESOURCE_EXHAUSTED",
        "The server's WatchStatus streams hold --max-watch-unread-bytes their clients have not "
        "read. "
        f"{_RESUME}",
    ),
    _r(
        "WATCH_UNREAD_BYTES_FOR_CUSTOMER",
        "RESOURCE_EXHAUSTED",
        "This customer's WatchStatus streams hold --max-watch-unread-bytes-per-customer unread: "
        f"read every stream opened. {_RESUME}",
    ),
    _r(
        "SHUTTING_DOWN",
        "UNAVAILABLE",
        "The server is shutting down. Retry, or resume the watch, on another replica.",
    ),
    _r(
        "RESUME",
        "UNAVAILABLE",
        f"The server ended the watch for it to be resumed. {_RESUME}",
    ),
    _r(
        "LOG_UNREADABLE",
        "UNAVAILABLE",
        "The server has not read the event log for two heartbeat intervals (metadata "
        f"head_revision, unread_seconds). {_RESUME} On another replica if this one refuses.",
    ),
    _r("DATABASE_UNAVAILABLE", "UNAVAILABLE", f"The database cannot be reached. {_RETRY}"),
    _r(
        "DATABASE_LOCK_TIMEOUT",
        "UNAVAILABLE",
        f"Another session held a lock past --database-lock-timeout. {_RETRY}",
    ),
    _r(
        "DATABASE_STATEMENT_TIMEOUT",
        "UNAVAILABLE",
        f"A statement ran past --database-statement-timeout. {_RETRY}",
    ),
    _r(
        "DATABASE_CHANGED",
        "UNAVAILABLE",
        f"The database changed under the server, which has not recognised it yet. {_RETRY}",
    ),
    _r(
        "DATABASE_FILE_MISSING",
        "UNAVAILABLE",
        "The SQLite file was deleted. Restore it or restart the server; nothing was written.",
    ),
    _r(
        "DATABASE_FILE_REPLACED",
        "UNAVAILABLE",
        "The SQLite file was replaced or deleted while the write committed: it may be lost. "
        "Read the campaign before writing again.",
    ),
    _r(
        "DATABASE_CONFLICT",
        "UNAVAILABLE",
        f"Other replicas kept changing the campaigns while the write was made, 4 times. {_RETRY}",
    ),
    _r(
        "COMMIT_OUTCOME_UNKNOWN",
        "UNAVAILABLE",
        "The connection went as the write committed and the database could not be asked: it "
        "may have been written. Read the campaign before writing again.",
    ),
    _r(
        "DEADLINE_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "The call's deadline passed before the server started it: nothing was done.",
    ),
    _r(
        "REQUEST_NOT_RECEIVED",
        "DEADLINE_EXCEEDED",
        "The request message did not arrive within --request-receive-timeout of the call's "
        "start (metadata limit_seconds).",
    ),
    _r(
        "TOKEN_MISSING",
        "UNAUTHENTICATED",
        "The server wants a bearer token (authorization: Bearer <token>) and none was sent.",
    ),
    _r("TOKEN_MALFORMED", "UNAUTHENTICATED", "The authorization metadata is not a bearer token."),
    _r("TOKEN_UNKNOWN", "UNAUTHENTICATED", "The token is not one of --auth-tokens."),
    _r(
        "CUSTOMER_NOT_ALLOWED",
        "PERMISSION_DENIED",
        "The token acts for another customer than the request's customer_id (or WatchStatus "
        "named none).",
    ),
    _r(
        "UNIMPLEMENTED",
        "UNIMPLEMENTED",
        "This server grants no leases (it was started without them).",
    ),
    _r(
        "INTERNAL",
        "INTERNAL",
        "A fault of the server, logged with its traceback (never sent to the client). Report "
        "it with the time and method.",
    ),
)
