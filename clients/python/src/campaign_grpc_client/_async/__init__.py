"""The asyncio client, its watch and its retry loop: the source _sync/ is generated from.

tools/unasync.py (make unasync) writes each module's blocking twin into _sync/; `make lint`
checks that those are current. Where the two cannot be one text (grpc.aio's channel and its
EOF, a watch's closed flag, its silence bound) the code goes through the twins of _backends
and _silence.
"""
