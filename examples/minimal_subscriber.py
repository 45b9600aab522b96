"""Minimal Tianwang subscriber: every GNSS fix, decoded. Usage: TIANWANG_TOKEN=... python minimal_subscriber.py [HOST:PORT]"""
import os, sys
import grpc, msgpack
from tianwang.v1 import gateway_pb2 as pb, gateway_pb2_grpc as pb_grpc

channel = grpc.insecure_channel(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
stub = pb_grpc.GatewayStub(channel)
auth = [("authorization", f"Bearer {os.environ['TIANWANG_TOKEN']}")]
request = pb.SubscribeRequest(topics=["gnss/+/fix"], from_seq=int(os.environ.get("FROM_SEQ", "0")))
for batch in stub.Subscribe(request, metadata=auth):
    if batch.HasField("gap"):  # we asked for envelopes the gateway no longer holds
        print(f"gap {batch.gap.from_seq}..{batch.gap.to_seq}: {batch.gap.reason}", flush=True)
    for env in batch.envelopes:
        fix = msgpack.unpackb(env.payload)
        print(env.seq, env.device_id, fix["lat"], fix["lon"], fix["speed_mps"], flush=True)
