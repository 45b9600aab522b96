"""Reading the gateway's NATS JetStream stream back as envelopes: the consumer side of the bridge
(`bridges.nats`), so a downstream system can take the same envelopes, with the same payloads, from
gRPC or from NATS.

Each stream message is one serialized `Batch` of one gateway and one family, on subject
`<prefix>.<gateway>.<family>`, with headers `Tianwang-Gateway`, `Tianwang-Journal`,
`Tianwang-First-Seq`, `Tianwang-Last-Seq` (docs/contract.md). Needs nats-py (`pip install nats-py`).

    import asyncio
    from tianwang.v1 import jetstream

    async def main():
        async for item in jetstream.read(["nats://127.0.0.1:4222"], families=["gnss"]):
            if isinstance(item, jetstream.Gap):
                print("gap", item.gateway, item.from_seq, item.to_seq, item.reason)
            else:
                print(item["gateway"], item["seq"], item["topic"], item["payload"])

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from tianwang.v1 import gateway_pb2 as pb
from tianwang.v1.client import envelope_dict

if TYPE_CHECKING:  # nats-py is optional (the `nats` extra): imported when read() runs
    from nats.aio.msg import Msg


class Gap(NamedTuple):
    """Envelopes `from_seq`..`to_seq` of `gateway`'s journal never reached the stream."""

    gateway: str
    from_seq: int
    to_seq: int
    reason: str


async def read(
    servers: list[str] | str,
    *,
    stream: str = "TIANWANG",
    prefix: str = "tianwang",
    gateways: Iterable[str] = (),
    families: Iterable[str] = (),
    from_stream_seq: int = 1,
    idle_timeout: float | None = None,
    **connect_options: Any,
) -> AsyncIterator[dict[str, Any] | Gap]:
    """Envelopes (dicts as `client.envelope_dict` makes them, plus `gateway` and `stream_seq`) and
    Gaps, in stream order, from stream sequence `from_stream_seq`. Ends after `idle_timeout`
    seconds without a message (None: never). `connect_options` go to `nats.connect` (token,
    user, password, user_credentials, tls...)."""
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    gws = list(gateways)
    fams = set(families)
    subject = f"{prefix}.{gws[0]}.>" if len(gws) == 1 else f"{prefix}.>"

    async def quiet(exc: Exception) -> None:  # the client logs every failed attempt with a traceback otherwise
        return None

    connect_options.setdefault("error_cb", quiet)
    connect_options.setdefault("connect_timeout", 2)
    connect_options.setdefault("max_reconnect_attempts", 5)
    connect_options.setdefault("reconnect_time_wait", 1)
    nc = await nats.connect(servers, **connect_options)
    try:
        js = nc.jetstream()
        queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=256)

        async def on_msg(msg: Msg) -> None:
            await queue.put(msg)

        await js.subscribe(
            subject,
            stream=stream,
            cb=on_msg,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_stream_seq),
        )
        while True:
            try:
                msg = (
                    await asyncio.wait_for(queue.get(), idle_timeout) if idle_timeout is not None else await queue.get()
                )
            except TimeoutError:
                return
            _, gateway, family = msg.subject.split(".", 2)
            if (gws and gateway not in gws) or (fams and family not in fams and family != "_gap"):
                continue
            for item in _items(msg):
                yield item
    finally:
        await nc.close()


def _items(msg: Msg) -> Iterator[dict[str, Any] | Gap]:
    headers = msg.headers or {}
    gateway = headers.get("Tianwang-Gateway", "")
    if not msg.data:
        return  # a window mark without envelopes
    batch = pb.Batch.FromString(msg.data)
    if batch.HasField("gap"):
        yield Gap(gateway, batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason)
    stream_seq = msg.metadata.sequence.stream
    for env in batch.envelopes:
        d = envelope_dict(env)
        d["gateway"] = gateway
        d["stream_seq"] = stream_seq
        yield d
