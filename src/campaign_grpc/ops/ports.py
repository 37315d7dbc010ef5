"""Where the server listens: its port, in plaintext or TLS, and the port of --health-listen."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from . import security

log = logging.getLogger(__name__)

# What the port of --health-listen takes: probes, a few connections of a call or two each.
HEALTH_PORT_STREAMS = 16
HEALTH_PORT_CONNECTIONS = 64


class ListenRefused(OSError):
    """The address to serve on cannot be had: in use by another process, say."""


def add_port(server: grpc.aio.Server, address: str, tls: security.TLSFiles | None) -> int:
    if tls is None:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(tls.private_key, tls.cert_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )
    return server.add_secure_port(address, credentials)


async def serve_health_alone(
    servicer: health.aio.HealthServicer, address: str, options: list[tuple[str, int]]
) -> tuple[grpc.aio.Server, int]:
    """grpc.health.v1 in plaintext on an address of its own, with the statuses of the main
    port: Kubernetes' native gRPC probes speak neither TLS nor tokens. Only Check and Watch
    are there, so nothing else needs either. options are the main port's."""
    # The main port's protections, with its caps replaced, not repeated: of two values for
    # one key, which one grpc core takes is not something to rely on.
    replaced = dict(options)
    # A probe holds a call or two: a peer that opens streams by the thousand is not one.
    replaced["grpc.max_concurrent_streams"] = HEALTH_PORT_STREAMS
    replaced["grpc.max_allowed_incoming_connections"] = HEALTH_PORT_CONNECTIONS
    server = grpc.aio.server(options=list(replaced.items()))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ListenRefused(f"cannot listen on --health-listen {address}: {exc}") from exc
    await server.start()
    log.info("health alone on %s (plaintext)", address.rsplit(":", 1)[0] + f":{port}")
    return server, port


def describe_tls(tls: security.TLSFiles | None) -> str:
    if tls is None:
        return "plaintext"
    return "mutual TLS" if tls.client_ca is not None else "TLS"
