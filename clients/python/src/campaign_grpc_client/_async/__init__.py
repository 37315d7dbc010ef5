"""The asyncio client, its watch and its retry loop: the source _sync/ is generated from.

tools/unasync.py (make unasync) writes each module's blocking twin into _sync/; `make lint`
checks that those are current. Where the two cannot be one text (a watch's closed flag, how
it bounds a read, grpc.aio's EOF) the asyncio code calls twins in _backends and _silence.
"""
