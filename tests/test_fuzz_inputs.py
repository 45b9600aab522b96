"""Fuzzing what strangers send: the config loader (any YAML, any structure, wrong types in every
key) and every field of every gRPC request, over a real channel. The answer is a ConfigError
listing problems, or a gRPC status with a message: never a crash, a hang, an UNKNOWN status, or a
gateway that stops serving. `make fuzz` runs more examples (TIANWANG_FUZZ_EXAMPLES)."""

import asyncio

import grpc
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gw import CONTROL, READ, base_config, md, registry, running
from tests.conftest import FUZZ_EXAMPLES
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.config import load_config
from tianwang.v1 import gateway_pb2 as pb, gateway_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(300)

fuzz = settings(max_examples=max(100, FUZZ_EXAMPLES // 10), suppress_health_check=list(HealthCheck), deadline=None)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(["127.0.0.1:0", "64KiB", "-1", "1e309", "tcp://127.0.0.1:1", "serial:///dev/null", "#", "+/+"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = {
    "gateway": [
        "name",
        "listen",
        "metrics",
        "metrics_auth",
        "journal",
        "tls",
        "fanout",
        "keepalive",
        "shutdown_grace_s",
    ],
    "journal": ["path", "max_bytes", "fsync", "fsync_window_ms", "disk_max_bytes", "max_age_s", "segment_bytes"],
    "token": [
        "name",
        "token",
        "token_env",
        "token_file",
        "read",
        "control",
        "admin",
        "commands_per_s",
        "commands_burst",
    ],
    "device": ["id", "driver", "url", "enabled", "backoff", "labels", "rate_hz", "listen", "protocol"],
}


@st.composite
def configs(draw):
    """Configs that are mostly right, with wrong values put into real keys."""

    def section(kind):
        return {k: draw(values) for k in draw(st.lists(st.sampled_from(KEYS[kind]), max_size=4, unique=True))}

    gw = section("gateway")
    if draw(st.booleans()):
        gw["journal"] = section("journal")
    return {
        "gateway": gw,
        "auth": {"tokens": [section("token") for _ in range(draw(st.integers(0, 2)))], "anonymous_read": draw(values)},
        "devices": draw(st.lists(st.builds(dict, st.just({})).map(lambda _: section("device")) | values, max_size=3)),
        "listeners": draw(values),
        draw(st.text(max_size=8)): draw(values),
    }


@fuzz
@given(cfg=configs())
def test_config_loader_answers_with_problems_never_a_crash(cfg):
    try:
        load_config(cfg, registry())
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and isinstance(r, str) and r for p, r in exc.problems)


@fuzz
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_config_loader_on_any_text(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "gw.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(str(path), registry())
    except ConfigError as exc:
        assert exc.problems


def test_config_loader_on_yaml_bombs(tmp_path):
    bomb = "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n"  # nine aliases of the level below
        for i in range(8)
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(ConfigError):
        load_config(str(path), registry())


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=80) | st.sampled_from(
    ["#", "+", "test/#", "test/+/reading", "a//b", "#/a", "gen-1", "\x00", "é/#"]
)
requests = st.one_of(
    st.builds(
        lambda t, f, b, d, j: (
            "Subscribe",
            pb.SubscribeRequest(topics=t, from_seq=f, max_batch=b, max_delay_ms=d, journal_id=j),
        ),
        st.lists(text, max_size=5),
        u64,
        u32,
        u32,
        text,
    ),
    st.builds(lambda f: ("ListDevices", pb.ListDevicesRequest(family=f)), text),
    st.builds(
        lambda dev, act, args, reason, t: (
            "SendCommand",
            pb.CommandRequest(device_id=dev, action=act, args=args, reason=reason, timeout_ms=t),
        ),
        text,
        text | st.sampled_from(["echo", "slow", "refuse", "emit"]),
        st.binary(max_size=60)
        | st.builds(
            msgpack.packb,
            st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5), max_size=3),
        ),
        text,
        u32,
    ),
    st.just(("GetStats", pb.GetStatsRequest())),
    st.builds(
        lambda m, raw: (m, raw),
        st.sampled_from(["Subscribe", "ListDevices", "SendCommand", "GetStats"]),
        st.binary(max_size=200),
    ),
)
tokens = st.sampled_from([READ, CONTROL, None, "nope", ""])

OK_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


async def test_every_grpc_request_field_fuzzed_over_a_real_channel():
    cfg = base_config([{"id": "gen-1", "driver": "testgen", "rate_hz": 20}], control=("#",))
    cfg["auth"]["refused_commands_burst"] = 1_000_000  # the fuzzer is one address: audit every refusal
    async with running(cfg) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            seen = {}

            async def one(method, req, token):
                raw = req if isinstance(req, bytes) else req.SerializeToString()
                path = f"/tianwang.v1.Gateway/{method}"
                metadata = md(token) if token else ()
                try:
                    if method == "Subscribe":
                        call = ch.unary_stream(path)(raw, metadata=metadata, timeout=2)
                        await asyncio.wait_for(call.read(), 1.0)
                        call.cancel()
                    else:
                        await ch.unary_unary(path)(raw, metadata=metadata, timeout=5)
                    code = grpc.StatusCode.OK
                except TimeoutError:  # a live stream with nothing to send yet
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    assert exc.details(), f"{method}: {code} without a message"
                assert code in OK_CODES, f"{method} {req!r}: {code}"
                seen[code] = seen.get(code, 0) + 1

            @fuzz
            @given(item=requests, token=tokens)
            def run(item, token):
                method, req = item
                asyncio.get_event_loop_policy()  # the outer loop runs the calls
                futures.append((method, req, token))

            futures = []
            run()
            for method, req, token in futures:
                await one(method, req, token)
            # the gateway still serves a well-formed call after all that
            stub = pb_grpc.GatewayStub(ch)
            stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            assert stats.last_seq > 0
            assert grpc.StatusCode.INVALID_ARGUMENT in seen and grpc.StatusCode.OK in seen
