"""gRPC transport: thin servicers, proto conversion and the one error mapping."""
