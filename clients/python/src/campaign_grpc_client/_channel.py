"""How a client proves itself: TLS for the channel, and a bearer token sent with every call;
and how its channel notices a dead connection."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import grpc

Metadata = tuple[tuple[str, str], ...]

# HTTP/2 PINGs on a connection with a call open, so that one that went dead without a FIN or
# RST (a server paused, a NAT or firewall that forgot the flow) fails its calls UNAVAILABLE
# within keepalive time plus timeout, 30 s, instead of never. They must never earn a strike
# from our server (ops/grpc_options.py), whose third one is a GOAWAY
# ENHANCE_YOUR_CALM: with a call open it accepts a PING every 10 s, and every 20 s leaves
# room for timer slack. With no call open, grpc core on a server that does not set
# grpc.keepalive_permit_without_calls (ours does not) counts any PING within 2 h a strike,
# so the client sends none then (max_connection_idle closes such a connection anyway).
# A watch sends nothing after its request: max_pings_without_data 0 keeps the PINGs going
# on it, where the default (2) would stop them after two.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class TLS:
    """TLS to the server, as PEM bytes.

    root_ca: the CA that signed the server's certificate (None: the system's roots);
    client_cert and client_key: this client's certificate, for a server that requires one
    (mutual TLS).
    """

    root_ca: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None

    @classmethod
    def from_files(
        cls,
        root_ca: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
    ) -> TLS:
        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(read(root_ca), read(client_cert), read(client_key))

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(self.root_ca, self.client_key, self.client_cert)


def channel_credentials(
    credentials: grpc.ChannelCredentials | None, tls: TLS | None
) -> grpc.ChannelCredentials | None:
    """The credentials of a channel the client makes; None for a plaintext one."""
    if credentials is not None and tls is not None:
        raise ValueError("give either credentials or tls")
    return tls.credentials() if tls is not None else credentials


def call_metadata(token: str | None) -> Metadata | None:
    """The metadata sent with every call: the bearer token, if any."""
    if token is None:
        return None
    if not token or token != token.strip():
        raise ValueError("a token is a non-empty string without surrounding whitespace")
    return (("authorization", f"Bearer {token}"),)


def service_config() -> str:
    """The gRPC service config of the contract (its retry policy), as JSON text, for a plain
    channel: options=[("grpc.service_config", service_config()), ("grpc.enable_retries", 1)].
    The clients here do not take it, as they retry by themselves."""
    return resources.files("campaign_grpc_client").joinpath("service_config.json").read_text()
