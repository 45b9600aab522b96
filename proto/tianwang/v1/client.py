"""A small client for the gateway's gRPC contract: a channel (TLS or mutual TLS), the bearer token,
a subscription that resumes from a sequence number, and envelopes decoded to plain dicts.

It needs grpcio, protobuf and msgpack only (the `tianwang-proto` distribution); the `tianwang`
command's client verbs use it too.

    from tianwang.v1 import client

    channel = client.open_channel("gw.example:50051", ca="ca.crt")  # token: TIANWANG_TOKEN
    for item in client.subscribe(channel, ["gnss/+/fix"], from_seq=last_seq + 1):
        if isinstance(item, client.Gap):  # envelopes the gateway no longer holds
            print("lost", item.from_seq, "..", item.to_seq, item.reason)
        else:
            last_seq = item["seq"]
            print(item["device_id"], item["payload"]["lat"], item["payload"]["lon"])
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable
from typing import Any, NamedTuple

import grpc
import msgpack

from tianwang.v1 import gateway_pb2 as pb, gateway_pb2_grpc as pb_grpc

DEFAULT_ADDR = "127.0.0.1:50051"


class Gap(NamedTuple):
    """Envelopes from_seq..to_seq (inclusive) were asked for but are gone (`reason`: "retention")."""

    from_seq: int
    to_seq: int
    reason: str


JOURNAL_ID_HEADER = "tianwang-journal-id"


class Position:
    """Where a subscriber is: the journal it reads and the next seq it wants.

    Keep one (persist `journal_id` and `next_seq` if the subscriber restarts) and pass it to
    `subscribe`/`subscribe_batches`: they resume from it, check that the gateway still has the same
    journal, and move it forward as envelopes arrive. A gateway whose journal is another one (it
    restarted without journal.path, or its disk was replaced) refuses the resume with
    FAILED_PRECONDITION instead of serving other envelopes under the same seqs.
    """

    __slots__ = ("journal_id", "next_seq")

    def __init__(self, journal_id: str = "", next_seq: int = 0) -> None:
        self.journal_id = journal_id
        self.next_seq = next_seq

    def __repr__(self) -> str:
        return f"Position(journal_id={self.journal_id!r}, next_seq={self.next_seq})"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def channel_options() -> list[tuple[str, Any]]:
    # batches are capped at 3 MiB by the server; allow the full 4 MiB default with room
    return [("grpc.max_receive_message_length", 8 * 1024 * 1024)]


def open_channel(
    addr: str | None = None, *, ca: str | None = None, cert: str | None = None, key: str | None = None
) -> grpc.Channel:
    """A sync channel to `addr` (else TIANWANG_ADDR, else 127.0.0.1:50051): TLS when `ca` (the CA
    file that signed the gateway's certificate) is given, mutual TLS with `cert` and `key` too."""
    addr = addr or os.environ.get("TIANWANG_ADDR") or DEFAULT_ADDR
    if ca or cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(ca) if ca else None,
            private_key=_read(key) if key else None,
            certificate_chain=_read(cert) if cert else None,
        )
        return grpc.secure_channel(addr, creds, options=channel_options())
    return grpc.insecure_channel(addr, options=channel_options())


def auth_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata with the bearer `token`, else TIANWANG_TOKEN's; empty when there is neither."""
    token = token if token is not None else os.environ.get("TIANWANG_TOKEN")
    return (("authorization", f"Bearer {token}"),) if token else ()


def stub(channel: grpc.Channel) -> pb_grpc.GatewayStub:
    return pb_grpc.GatewayStub(channel)


def subscribe_batches(
    channel: grpc.Channel,
    topics: Iterable[str] = (),
    *,
    from_seq: int = 0,
    token: str | None = None,
    max_batch: int = 0,
    max_delay_ms: int | None = None,
    journal_id: str = "",
    position: Position | None = None,
) -> Generator[tuple[Gap | None, list[dict[str, Any]]], None, None]:
    """One item per Batch the gateway writes: (its Gap or None, its envelopes as dicts). For a
    caller that acts once per batch (flushing output, committing a cursor); `subscribe` flattens it.
    With `position`, resume from it and keep it current (see Position); `journal_id` alone checks
    that `from_seq` refers to the gateway's journal. `max_delay_ms`: None = the gateway's default
    (no wait unless the site sets one), 0 = no wait (a batch goes out as soon as one is ready), N =
    wait up to N ms to fill a batch. Errors raise grpc.RpcError; closing the iterator cancels the
    call."""
    if position is not None:
        from_seq = position.next_seq or from_seq
        journal_id = position.journal_id or journal_id
    request = pb.SubscribeRequest(topics=list(topics), from_seq=from_seq, max_batch=max_batch, journal_id=journal_id)
    if max_delay_ms is not None:  # None leaves it unset: the gateway's default
        request.max_delay_ms = max_delay_ms
    call = stub(channel).Subscribe(request, metadata=auth_metadata(token))
    try:
        if position is not None:
            for key, value in call.initial_metadata() or ():
                if key == JOURNAL_ID_HEADER:  # a text header: grpc hands it over as str
                    position.journal_id = value if isinstance(value, str) else value.decode()
        for batch in call:
            gap = Gap(batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason) if batch.HasField("gap") else None
            envelopes = [envelope_dict(env) for env in batch.envelopes]
            # the position counts what has been handed over: a caller that saves it after
            # handling a batch resumes after that batch
            if position is not None:
                if envelopes:
                    position.next_seq = envelopes[-1]["seq"] + 1
                elif gap is not None:
                    position.next_seq = gap.to_seq + 1
            yield gap, envelopes
    finally:
        call.cancel()


def subscribe(
    channel: grpc.Channel,
    topics: Iterable[str] = (),
    *,
    from_seq: int = 0,
    token: str | None = None,
    max_batch: int = 0,
    max_delay_ms: int | None = None,
    journal_id: str = "",
    position: Position | None = None,
) -> Generator[dict[str, Any] | Gap, None, None]:
    """Envelopes matching `topics` (MQTT-style patterns; none = all the token may read), as dicts
    (see envelope_dict), and a Gap wherever the gateway no longer holds what was asked for.

    from_seq=0 is live only; otherwise the gateway replays from that seq first, so a subscriber
    that keeps the last seq it handled resumes with from_seq=last + 1 and loses nothing the journal
    still holds; a `Position` does that bookkeeping and also checks the journal's id, so a resume
    against another journal fails instead of returning other envelopes. Errors raise
    grpc.RpcError; closing the iterator cancels the call.
    """
    batches = subscribe_batches(
        channel,
        topics,
        from_seq=from_seq,
        token=token,
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        journal_id=journal_id,
        position=position,
    )
    try:
        for gap, envelopes in batches:
            if gap is not None:
                if position is not None:
                    position.next_seq = gap.to_seq + 1
                yield gap
            for env in envelopes:
                if position is not None:
                    position.next_seq = env["seq"] + 1
                yield env
    finally:
        batches.close()


def unpack(payload: bytes) -> Any:
    """An envelope's (or a command's) msgpack payload as a dict; {} when it is empty."""
    if not payload:
        return {}
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def envelope_dict(env: pb.Envelope) -> dict[str, Any]:
    return {
        "seq": env.seq,
        "topic": env.topic,
        "device_id": env.device_id,
        "device_time_ns": env.device_time_ns,
        "gateway_time_ns": env.gateway_time_ns,
        "payload": unpack(env.payload),
    }


def pack_args(args: dict[str, Any]) -> bytes:
    return msgpack.packb(args, use_bin_type=True)
