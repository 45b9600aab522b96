"""The gRPC client side the scale benchmarks share: a Subscribe stream read until told to stop,
and ListDevices."""

import asyncio

import grpc

from tianwang.v1 import gateway_pb2 as pb


async def batches_until(addr: str, request, metadata, stop: asyncio.Event):
    """Each Batch of a Subscribe `request` to `addr` until `stop` is set (or the stream ends)."""
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ch.unary_stream(
            "/tianwang.v1.Gateway/Subscribe",
            request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.Batch.FromString,
        )(request, metadata=metadata)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            it = call.__aiter__()
            while True:
                nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    return
                try:
                    batch = nxt.result()
                except StopAsyncIteration:
                    return
                yield batch
        finally:
            stopper.cancel()
            call.cancel()


async def list_devices(addr: str, metadata, family: str = "", timeout: float = 30):
    """ListDevices of `addr` (every page)."""
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ch.unary_unary(
            "/tianwang.v1.Gateway/ListDevices",
            request_serializer=pb.ListDevicesRequest.SerializeToString,
            response_deserializer=pb.ListDevicesReply.FromString,
        )
        devices: list = []
        token = ""
        while True:
            reply = await call(
                pb.ListDevicesRequest(family=family, page_size=5000, page_token=token),
                metadata=metadata,
                timeout=timeout,
            )
            devices.extend(reply.devices)
            token = reply.next_page_token
            if not token:
                return devices
