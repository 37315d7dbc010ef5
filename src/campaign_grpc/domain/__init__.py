"""The domain: campaigns, their lifecycle and validation; no gRPC, no SQL."""
