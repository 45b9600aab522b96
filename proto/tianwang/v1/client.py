"""Client plumbing shared by the CLI verbs (and usable from scripts): channels with TLS and the
bearer token, and envelope decoding to plain dicts."""

from __future__ import annotations

import os

import grpc
import msgpack

from tianwang.v1 import gateway_pb2 as pb
from tianwang.v1 import gateway_pb2_grpc as pb_grpc

DEFAULT_ADDR = "127.0.0.1:50051"


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def channel_options():
    # batches are capped at 3 MiB by the server; allow the full 4 MiB default with room
    return [("grpc.max_receive_message_length", 8 * 1024 * 1024)]


def open_channel(addr: str | None = None, *, ca: str | None = None, cert: str | None = None, key: str | None = None):
    """A sync channel to the gateway: TLS when `ca` is given (mTLS with `cert` and `key`)."""
    addr = addr or os.environ.get("TIANWANG_ADDR") or DEFAULT_ADDR
    if ca or cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(ca) if ca else None,
            private_key=_read(key) if key else None,
            certificate_chain=_read(cert) if cert else None,
        )
        return grpc.secure_channel(addr, creds, options=channel_options())
    return grpc.insecure_channel(addr, options=channel_options())


def auth_metadata(token: str | None = None):
    token = token if token is not None else os.environ.get("TIANWANG_TOKEN")
    return (("authorization", f"Bearer {token}"),) if token else ()


def stub(channel) -> pb_grpc.GatewayStub:
    return pb_grpc.GatewayStub(channel)


def unpack(payload: bytes):
    if not payload:
        return {}
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def envelope_dict(env: pb.Envelope) -> dict:
    return {
        "seq": env.seq,
        "topic": env.topic,
        "device_id": env.device_id,
        "device_time_ns": env.device_time_ns,
        "gateway_time_ns": env.gateway_time_ns,
        "payload": unpack(env.payload),
    }


def gap_dict(gap: pb.Gap) -> dict:
    return {"gap": {"from_seq": gap.from_seq, "to_seq": gap.to_seq, "reason": gap.reason}}


def pack_args(args: dict) -> bytes:
    return msgpack.packb(args, use_bin_type=True)
