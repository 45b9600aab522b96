"""Compiled hot paths (Cython 3). Import them through `tianwang.gateway.framing`, never directly."""
