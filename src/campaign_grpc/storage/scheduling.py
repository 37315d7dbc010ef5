"""How the operating system schedules the database threads."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def no_wakeup_preemption() -> None:
    """Puts the calling thread under Linux's SCHED_BATCH: its fair share of the CPU as before,
    but woken by the event loop, it no longer preempts it.

    Preempted right after handing a batch over, the loop sat descheduled holding the GIL,
    which the woken thread needed first thing: each read cost two more context switches (the
    gain is measured in docs/performance.md). No privilege is needed; elsewhere, or refused,
    nothing changes.
    """
    if not hasattr(os, "SCHED_BATCH"):
        return
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        log.debug("database threads keep the default scheduling policy: %s", exc)
