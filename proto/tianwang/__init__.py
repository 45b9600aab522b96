"""Tianwang: a field gateway for city safety networks.

Drivers talk to devices, a compiled hot path frames and routes every message, and one gRPC fan-out
feeds every downstream service. The package's parts:

- `tianwang.v1`              the gRPC contract: generated modules and `tianwang.v1.client`
- `tianwang.gateway`         the core (data path, device lifecycle, command-line tools)
- `tianwang.drivers`         one package per protocol; `tianwang.drivers.sdk` is what a driver imports
- `tianwang.cext`            the compiled hot path and its pure-Python twins

docs/architecture.md and docs/contract.md in the repository describe them.
"""

__version__ = "0.1.0"
