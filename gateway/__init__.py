"""Tianwang: a field gateway for city safety networks.

Drivers talk to devices, a compiled hot path frames and routes every message, and one gRPC fan-out
feeds every downstream service. See DESIGN.md for the architecture and README.md to get started.
"""

__version__ = "0.1.0"
