"""How a client proves itself: TLS for the channel, and a bearer token sent with every call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

Metadata = tuple[tuple[str, str], ...]


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
