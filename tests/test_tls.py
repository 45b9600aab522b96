"""TLS and mutual TLS on the gRPC listener, with certificates made by openssl for 127.0.0.1."""

import http.client
import subprocess

import grpc
import pytest

from gw import READ, base_config, md, running
from tianwang.v1 import gateway_pb2 as pb, gateway_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(60)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=tianwang test CA",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            cwd=d,
        )
    return d


def creds(pki, client_cert):
    read = lambda n: (pki / n).read_bytes()  # noqa: E731
    if client_cert:
        return grpc.ssl_channel_credentials(read("ca.crt"), read("client.key"), read("client.crt"))
    return grpc.ssl_channel_credentials(read("ca.crt"))


async def list_devices(port, credentials):
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as ch:
        return await pb_grpc.GatewayStub(ch).ListDevices(pb.ListDevicesRequest(), metadata=md(READ), timeout=5)


async def test_tls(pki):
    tls = {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key")}
    async with running(base_config([], tls=tls)) as gw:
        assert (await list_devices(gw.port, creds(pki, False))).devices == []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:  # plaintext is refused
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await pb_grpc.GatewayStub(ch).ListDevices(pb.ListDevicesRequest(), metadata=md(READ), timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate(pki):
    tls = {
        "cert_file": str(pki / "server.crt"),
        "key_file": str(pki / "server.key"),
        "client_ca_file": str(pki / "ca.crt"),
    }
    async with running(base_config([], tls=tls)) as gw:
        assert (await list_devices(gw.port, creds(pki, True))).devices == []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await list_devices(gw.port, creds(pki, False))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_cli_speaks_mutual_tls(pki):
    import asyncio
    import os
    import sys

    from gw import ROOT

    tls = {
        "cert_file": str(pki / "server.crt"),
        "key_file": str(pki / "server.key"),
        "client_ca_file": str(pki / "ca.crt"),
    }
    async with running(base_config([{"id": "gen-1", "driver": "testgen", "rate_hz": 0}], tls=tls)) as gw:
        env = dict(os.environ, TIANWANG_TOKEN=READ)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tianwang",
            "devices",
            "--addr",
            f"127.0.0.1:{gw.port}",
            "--ca",
            str(pki / "ca.crt"),
            "--cert",
            str(pki / "client.crt"),
            "--key",
            str(pki / "client.key"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert "gen-1" in out.decode()


def _get(url, token=None, cafile=None):
    import ssl
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_metrics_behind_tls_and_a_token(pki, monkeypatch):
    import asyncio

    monkeypatch.setenv("TW_METRICS_TOKEN", "metrics-token-0123456789")
    cfg = base_config(
        [],
        metrics="127.0.0.1:0",
        metrics_auth={"token_env": "TW_METRICS_TOKEN"},
        tls={"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key")},
    )
    async with running(cfg) as gw:
        url = f"https://127.0.0.1:{gw.metrics_port}/metrics"
        loop = asyncio.get_running_loop()
        status, body = await loop.run_in_executor(None, _get, url, "metrics-token-0123456789", pki / "ca.crt")
        assert status == 200 and "tianwang_journal_last_seq" in body
        status, body = await loop.run_in_executor(None, _get, url, None, pki / "ca.crt")
        assert status == 401 and "metrics_auth" in body
        status, _ = await loop.run_in_executor(None, _get, url, "wrong", pki / "ca.crt")
        assert status == 401
        # plain HTTP is not served on the TLS port
        with pytest.raises((OSError, http.client.HTTPException)):  # reset, or a reply that is not HTTP
            await loop.run_in_executor(
                None, _get, f"http://127.0.0.1:{gw.metrics_port}/metrics", "metrics-token-0123456789"
            )
