"""Log set-up: plain lines for people, JSON lines for log pipelines, never in the way.

A log line is written to stderr by a thread of its own, from a bounded queue: a destination
that does not keep up (a pipe nobody reads, a stalled collector) fills the queue, and the
lines beyond it are dropped and counted (campaign_grpc_log_lines_dropped_total) instead of
blocking the event loop, which writing to stderr directly did once the pipe's 64 KiB were
full: every call stopped, health checks included.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
from typing import IO, Any

# Attributes every LogRecord has; anything else was passed with extra= and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
DEFAULT_BUFFER = 10_000
# Lines written at once by the writer thread, when that many are waiting.
_WRITE_BATCH = 256


class TraceIds(logging.Filter):
    """Puts the trace id and span id of the current span on a record, when there is one: a
    call's log lines (its access line, its errors) then lead to its trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        from . import tracing

        ids = tracing.current_ids()
        if ids is not None and not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Dropping(logging.handlers.QueueHandler):
    """Formats a record where it is logged, queues the line, and drops it when the queue is
    full: the thread that logs never waits for the destination."""

    def __init__(self, lines: queue.Queue[Any]) -> None:
        super().__init__(lines)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1  # only ever read as a count: a lost increment costs nothing


class _Writer:
    """The thread that writes the queued lines to a stream, several at a time, and says
    how many were dropped since it last could."""

    def __init__(self, lines: queue.Queue[Any], handler: _Dropping, stream: IO[str]) -> None:
        self._lines = lines
        self._handler = handler
        self._stream = stream
        try:
            # Straight to the file descriptor: a thread stuck in a write then holds none of
            # the locks of sys.stderr, which the interpreter takes when it exits.
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._reported = 0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            record = self._lines.get()
            if record is None:
                return
            batch = [record.msg]
            while len(batch) < _WRITE_BATCH:
                try:
                    record = self._lines.get_nowait()
                except queue.Empty:
                    break
                if record is None:
                    self._write(batch)
                    return
                batch.append(record.msg)
            self._write(batch)

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
        """Writes what is queued, for at most within seconds (a stalled destination keeps
        the rest)."""
        try:
            self._lines.put(None, timeout=within)
        except queue.Full:
            return
        self._thread.join(within)


_handler: _Dropping | None = None
_writer: _Writer | None = None


def configure(fmt: str, level: str, *, traced: bool = False, buffer: int = DEFAULT_BUFFER) -> None:
    """Logs to stderr through a queue of buffer lines (see the module's docstring)."""
    global _handler, _writer
    close()
    lines: queue.Queue[Any] = queue.Queue(buffer)
    handler = _Dropping(lines)
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
    _handler, _writer = handler, _Writer(lines, handler, sys.stderr)


def close(within: float = 2.0) -> None:
    """Writes the lines still queued, waiting within seconds at most."""
    global _writer
    if _writer is not None:
        _writer.close(within)
        _writer = None


def dropped_lines() -> int:
    """Log lines dropped since configure() because the destination did not keep up."""
    return 0 if _handler is None else _handler.dropped
