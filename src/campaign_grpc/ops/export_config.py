"""Which span exporters the standard OTEL_* variables ask for, read before anything starts.

The exporting process builds the exporters; the server checks these variables when it starts,
so that a value this server cannot honour stops it at once with the variable named, rather than
leaving a process that runs and exports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

# OTEL_TRACES_EXPORTER's values that this server exports to ("none" exports nothing).
EXPORTERS = ("otlp", "console", "none")
# OTLP's transports that the Python SDK has an exporter for; OTLP over gRPC stays the default,
# as it was before the variable was read (the specification's default is http/protobuf).
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "grpc"


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = (n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(","))
    return [n for n in names if n and n != "none"]


def otlp_protocol(environ: Mapping[str, str]) -> tuple[str, str]:
    """The protocol of OTLP trace export, and the variable that set it: the traces-only
    variable wins over the general one, as the specification orders them."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(variable, "").strip()
        if value:
            return value, variable
    return DEFAULT_PROTOCOL, "default"


def problems(environ: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    for name in exporter_names(environ):
        if name not in EXPORTERS:
            found.append(
                f"OTEL_TRACES_EXPORTER names {name!r}: this server exports to "
                + ", ".join(EXPORTERS)
            )
    if "otlp" in exporter_names(environ):
        protocol, variable = otlp_protocol(environ)
        if protocol not in PROTOCOLS:
            found.append(
                f"{variable}={protocol!r}: OTLP trace export here speaks " + " or ".join(PROTOCOLS)
            )
    return found
