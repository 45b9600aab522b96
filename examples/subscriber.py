"""Tianwang subscriber: print envelopes as JSON lines, resume from a seq.

Needs only the stubs distribution (`pip install ./proto`, or the gateway itself):

    TIANWANG_TOKEN=... python subscriber.py 'gnss/+/fix' 'signal/#' --count 10
    TIANWANG_TOKEN=... python subscriber.py 'gnss/+/fix' --from-seq 1234 --journal-id 5f0c...

One JSON object per line on stdout: an envelope (`seq`, `topic`, `device_id`, `device_time_ns`,
`gateway_time_ns`, `payload`; bytes in payloads as hex) or `{"gap": {from_seq, to_seq, reason}}`.
When it stops (after --count envelopes, or Ctrl-C) it prints on stderr where to resume:
`{"journal_id": ..., "next_seq": ...}`; pass them back as --journal-id and --from-seq.
"""

import argparse
import json
import sys

import grpc

from tianwang.v1 import client


def as_json(value):
    # msgpack payloads may hold bytes (raw sentences, snapshots): written as hex
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="topic patterns (MQTT wildcards); none = all the token may read")
    parser.add_argument("--addr", help="gateway HOST:PORT (default $TIANWANG_ADDR or 127.0.0.1:50051)")
    parser.add_argument("--ca", help="CA file of the gateway's certificate (TLS)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many envelopes (0 = never)")
    parser.add_argument("--from-seq", type=int, default=0, help="replay from this seq (0 = live only)")
    parser.add_argument("--journal-id", default="", help="the journal --from-seq refers to (from an earlier run)")
    args = parser.parse_args()
    if args.count < 0 or args.from_seq < 0:
        parser.error("--count and --from-seq must be 0 or more")

    position = client.Position(args.journal_id, args.from_seq)
    channel = client.open_channel(args.addr, ca=args.ca)
    seen = 0
    try:
        for item in client.subscribe(channel, args.patterns, position=position):
            if isinstance(item, client.Gap):  # asked-for envelopes the gateway no longer holds
                print(json.dumps({"gap": item._asdict()}), flush=True)
                continue
            print(json.dumps(item, default=as_json), flush=True)
            seen += 1
            if seen == args.count:
                break
    except grpc.RpcError as exc:
        print(f"subscriber: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        print(json.dumps({"journal_id": position.journal_id, "next_seq": position.next_seq}), file=sys.stderr)
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
