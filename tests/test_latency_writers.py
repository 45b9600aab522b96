"""The latency bench's two ways of playing the devices (gateway/benchmarks/latency.py, WRITERS):
both write every epoch once, over ptys and TCP, and every reading reaches the subscriber."""

from __future__ import annotations

import pytest

from tianwang.gateway.benchmarks import latency

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("writer", latency.WRITERS)
async def test_every_epoch_written_arrives_with_either_writer(tmp_path, writer):
    res = await latency.run_rate(str(tmp_path), 400, 1.0, warmup_s=0.5, writer=writer)
    assert res["writer"] == writer
    assert res["pty_devices"] >= 1 and res["tcp_devices"] >= 1
    # 4 receivers at 100 Hz for the 1 s window (and the epoch at its end)
    assert 400 <= res["readings"] <= 404
    assert res["missing"] == 0 and res["write_refused"] == 0 and res["received"] == res["readings"]
    assert 0 < res["p50_ms"] <= res["p99_ms"]
    assert res["gateway_cpu_cores"] > 0


async def test_an_unknown_writer_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="writer: 'burst' is not one of ticks, paced"):
        await latency.run_rate(str(tmp_path), 400, 1.0, writer="burst")
    assert list(tmp_path.iterdir()) == []
