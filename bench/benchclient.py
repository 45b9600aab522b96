"""The gRPC client side the scale benchmarks share: tianwang.gateway.benchmarks.client."""

from tianwang.gateway.benchmarks.client import batches_until, list_devices  # noqa: F401
