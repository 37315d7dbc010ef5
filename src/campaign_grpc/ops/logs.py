"""Log set-up: plain lines for people, JSON lines for log pipelines, never in the way.

A log line is written to stderr by a thread of its own, from a bounded buffer: a destination
that does not keep up (a pipe nobody reads, a stalled collector) fills the buffer, and the
lines beyond it are dropped and counted (campaign_grpc_log_lines_dropped_total) instead of
blocking the event loop, which writing to stderr directly did once the pipe's 64 KiB were
full: every call stopped, health checks included.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

# Attributes every LogRecord has; anything else was passed with extra= and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
DEFAULT_BUFFER = 10_000
# How often the writer thread writes what is waiting: a line is out within this.
WRITE_EVERY_S = 0.02
# Lines written at once by the writer thread, when that many are waiting.
_WRITE_BATCH = 256


class TraceIds(logging.Filter):
    """Puts the trace id and span id of the current span on a record, when there is one: a
    call's log lines (its access line, its errors) then lead to its trace."""

    def __init__(self) -> None:
        super().__init__()
        # Imported here, not by every process that logs.
        from .tracing import current_ids

        self._current_ids = current_ids

    def filter(self, record: logging.LogRecord) -> bool:
        ids = self._current_ids()
        if ids is not None and not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = ids
        return True


def rfc3339(created: float) -> str:
    """A record's time as log pipelines parse it without guessing: UTC, to the millisecond,
    with its offset ("2026-12-07T21:50:12.345+00:00"); local time without an offset cannot be
    ordered against another host's lines, nor whole seconds the lines of one call."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Dropping(logging.Handler):
    """Formats a record where it is logged and leaves the line for the writer thread, or
    drops it when buffer lines are waiting already: the thread that logs never waits for
    the destination, nor wakes the writer (a wake-up per line, and the interpreter lock the
    writer then takes, cost every call a noticeable share of its throughput)."""

    def __init__(self, buffer: int) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque()
        self._buffer = buffer
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        # A deque appends and pops atomically; its length may be off by a line or two
        # between threads, which only moves the bound by as much.
        if len(self.lines) < self._buffer:
            self.lines.append(line)
        else:
            self.dropped += 1  # only ever read as a count: a lost increment costs nothing


class _Writer:
    """The thread that writes the waiting lines to a stream every WRITE_EVERY_S, and says
    how many were dropped since it last could."""

    def __init__(self, handler: _Dropping, stream: IO[str]) -> None:
        self._handler = handler
        self._stream = stream
        try:
            # Straight to the file descriptor: a thread stuck in a write then holds none of
            # the locks of sys.stderr, which the interpreter takes when it exits.
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._reported = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lines = self._handler.lines
        while True:
            closing = self._closing.wait(WRITE_EVERY_S)
            while lines:
                batch: list[str] = []
                while lines and len(batch) < _WRITE_BATCH:
                    batch.append(lines.popleft())
                self._write(batch)
            if closing:
                return

    def _write(self, batch: list[str]) -> None:
        dropped = self._handler.dropped
        if dropped != self._reported:
            notice = logging.makeLogRecord(
                {
                    "name": __name__,
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": "%d log lines dropped: the log destination did not keep up",
                    "args": (dropped - self._reported,),
                }
            )
            batch.insert(0, self._handler.format(notice))
            self._reported = dropped
        data = ("\n".join(batch) + "\n").encode(errors="replace")
        try:
            if self._fd is None:
                self._stream.write(data.decode())
                self._stream.flush()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:  # the destination is gone (a closed pipe): these lines are lost
            self._handler.dropped += len(batch)
            self._reported += len(batch)

    def close(self, within: float) -> None:
        """Writes what is waiting, for at most within seconds (a stalled destination keeps
        the rest)."""
        self._closing.set()
        self._thread.join(within)


_handler: _Dropping | None = None
_writer: _Writer | None = None


def configure(fmt: str, level: str, *, traced: bool = False, buffer: int = DEFAULT_BUFFER) -> None:
    """Logs to stderr through a buffer of lines (see the module's docstring)."""
    global _handler, _writer
    close()
    handler = _Dropping(buffer)
    if traced:
        # A filter of the handler runs where the record is logged, in the call's context.
        handler.addFilter(TraceIds())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _handler, _writer = handler, _Writer(handler, sys.stderr)


def close(within: float = 2.0) -> None:
    """Writes the lines still queued, waiting within seconds at most."""
    global _writer
    if _writer is not None:
        _writer.close(within)
        _writer = None


def dropped_lines() -> int:
    """Log lines dropped since configure() because the destination did not keep up."""
    return 0 if _handler is None else _handler.dropped
