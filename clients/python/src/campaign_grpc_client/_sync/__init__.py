# Generated from clients/python/src/campaign_grpc_client/_async/__init__.py
# by tools/unasync.py (`make unasync`): do not edit. Edit the asyncio source and run
# it again; `make lint` checks that this file is current.
"""The blocking client, its watch and its retry loop, generated from _async/.

tools/unasync.py (make unasync) writes each module's blocking twin into _sync/; `make lint`
checks that those are current. Where the two cannot be one text (a watch's closed flag, how
it bounds a read, grpc.aio's EOF) the asyncio code calls twins in _backends and _silence.
"""
