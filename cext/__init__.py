"""Compiled hot paths (Cython 3). Import them through `gateway.framing`, never directly."""
