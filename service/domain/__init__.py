"""Domain rules of the task board: plain values in, plain values out, no gRPC."""
