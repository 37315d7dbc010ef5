"""The gRPC service config of campaign.v1.CampaignService, made from the contract's traits.

A gRPC channel in any language retries a call by itself when its service config gives the
method a retryPolicy (gRFC A6). It cannot see the request, so the policy covers only the
unary methods that are safe to repeat whatever the request: the reads and those marked
retry_safe. A method safe only when a request field is set (CreateCampaign's request_id, an
etag) is left to the client, which can look at the request; the streams (WatchStatus,
HoldLeases) are resumed by their helpers, not replayed by the channel.

    python -m campaign_grpc.service_config            # writes clients/service_config.json
    python -m campaign_grpc.service_config --check    # fails if a file is not what it writes

Each language's package carries a copy, which its default channel loads (PACKAGED_COPIES).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from campaign_grpc_client.methods import METHODS, SERVICE, Method

DEFAULT_PATH = Path("clients/service_config.json")
# Where each package finds it: embedded in the Go module, a resource of the jar, a file of the
# npm package, package data of the Python client.
PACKAGED_COPIES = (
    Path("clients/go/campaignclient/service_config.json"),
    Path("clients/java/src/main/resources/io/github/campaigngrpc/client/service_config.json"),
    Path("clients/node/service_config.json"),
    Path("clients/python/src/campaign_grpc_client/service_config.json"),
)

# Tries in all, the first included (gRPC caps it at 5), after UNAVAILABLE only, with jittered
# backoff that starts at 0.1 s and doubles up to 2 s, the Python client's own figures.
RETRY_POLICY: Mapping[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def retried_by_the_channel(method: Method) -> bool:
    return not method.streaming and method.retry_safe


def service_config(methods: Mapping[str, Method] = METHODS) -> dict[str, Any]:
    names = [
        {"service": SERVICE.full_name, "method": m.name}
        for m in methods.values()
        if retried_by_the_channel(m)
    ]
    return {"methodConfig": [{"name": names, "retryPolicy": dict(RETRY_POLICY)}]}


def render(config: Mapping[str, Any] | None = None) -> str:
    return json.dumps(service_config() if config is None else config, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m campaign_grpc.service_config",
        description="Write the gRPC service config (retry policy) derived from the contract.",
    )
    parser.add_argument(
        "path", nargs="?", type=Path, help="write only this file (default: all of them)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that the file is up to date"
    )
    args = parser.parse_args(argv)
    paths: Sequence[Path] = [args.path] if args.path else [DEFAULT_PATH, *PACKAGED_COPIES]
    text = render()
    if args.check:
        stale = [p for p in paths if not p.exists() or p.read_text() != text]
        for path in stale:
            print(
                f"{path} is not the service config the contract makes: "
                "run `python -m campaign_grpc.service_config` and commit it",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
