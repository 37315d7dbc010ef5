"""Distributed tracing with OpenTelemetry: off unless configured, and free while off."""

from __future__ import annotations

# Set once at start by configure(); read on every call, so a plain module attribute.
enabled = False


def current_traceparent() -> str:
    """The W3C traceparent of the current span, "" when tracing is off or nothing is traced."""
    if not enabled:
        return ""
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
