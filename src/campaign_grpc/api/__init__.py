"""The gRPC layer: the servicer, conversion, the error table, interceptors and gates."""
