"""The gRPC client side the scale benchmarks share: tianwang.gateway.bench.client."""

from tianwang.gateway.bench.client import batches_until, list_devices  # noqa: F401
