"""One interceptor that takes every call through a chain of small steps, built once a method.

The access log, the count of calls in flight, the metrics and the spans all watch the same
calls; one wrapper per method, built once, serves them all instead of a layer of wrapping
each per call. The same wrapper reads the request itself (intake), answers a request that
does not parse as the client's mistake (INVALID_ARGUMENT with details) instead of gRPC's own
UNKNOWN and one over the size limit with RESOURCE_EXHAUSTED and details, and asks the gates
and the admission whether a call may start at all (chain.py lists the steps in order).

  call.py       a call, and the kinds of step: observers, gates, recorders, tracing
  intake.py     the request bytes: received in bounded time, bounded in size, parsed
  gates.py      the deadline gate, and the order the gates are asked in
  observers.py  the access log and the count of unary calls in flight
  chain.py      one method's steps, in order, around each call
  wrappers.py   the handler wrapped in its chain, registered as taking a request stream
  observe.py    the server interceptor that wraps each method once
"""

from .call import (
    Call,
    CallTracing,
    Context,
    DoneObserver,
    Gate,
    Handler,
    MessageObserver,
    Observer,
    Recorder,
    code_name,
)
from .gates import DeadlineGate
from .intake import Receiving
from .observe import Observe
from .observers import AccessLog, UnaryCallsInFlight, access_log

__all__ = [
    "AccessLog",
    "Call",
    "CallTracing",
    "Context",
    "DeadlineGate",
    "DoneObserver",
    "Gate",
    "Handler",
    "MessageObserver",
    "Observe",
    "Observer",
    "Receiving",
    "Recorder",
    "UnaryCallsInFlight",
    "access_log",
    "code_name",
]
