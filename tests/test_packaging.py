"""The two distributions as wheels: `tianwang` (the gateway: one import name, every source folder
mapped under it) and `tianwang-proto` (tianwang.v1 alone), and a subscriber that has nothing but
the stubs and their dependencies.

Both wheels are built once for the module with `pip wheel --no-deps --no-build-isolation`, that is
with this venv's own setuptools, Cython and grpcio-tools (`make install` puts the build requirements
of both pyproject.toml files there), from a copy of the source tree, so the working tree is not
written to. The gateway's wheel is built with GATEWAY_NO_CEXT=1: nothing is compiled, and the
whole module takes seconds.
"""

import ast
import asyncio
import configparser
import email.parser
import importlib.metadata
import json
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gw import GNSS_ONLY, READ, ROOT, base_config, running

pytestmark = pytest.mark.timeout(120)

VERSION = next(
    node.value.value
    for node in ast.parse((ROOT / "proto" / "tianwang" / "__init__.py").read_text()).body
    if isinstance(node, ast.Assign) and node.targets[0].id == "__version__"
)
PYPROJECTS = [ROOT / "pyproject.toml", ROOT / "proto" / "pyproject.toml"]
STUB_DEPENDENCIES = {"grpcio", "protobuf", "msgpack"}
GENERATED = ("gateway_pb2.py", "gateway_pb2.pyi", "gateway_pb2_grpc.py", "gateway_pb2_grpc.pyi")
# what the gateway's source folders become in its wheel
FOLDERS = {
    "proto/tianwang": "tianwang",
    "gateway": "tianwang/gateway",
    "drivers": "tianwang/drivers",
    "cext": "tianwang/cext",
}

# Runs with `python -I -S`: no site-packages, no .pth files (so not the editable install of the
# gateway), no PYTHONPATH; sys.path is the stdlib plus the folders given as argv[1].
ISOLATED_PRELUDE = """
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
def importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True
"""

SUBSCRIBER = (
    ISOLATED_PRELUDE
    + r"""
args = json.loads(sys.argv[2])
def emit(**kw):
    print(json.dumps(kw), flush=True)

import tianwang
from tianwang.v1 import client

emit(isolation={
    "tianwang_file": tianwang.__file__,
    "tianwang_path": list(tianwang.__path__),
    "client": client.__file__,
    "importable": [m for m in ("tianwang.gateway", "tianwang.drivers", "uvloop", "pydantic", "serial", "yaml") if importable(m)],
})

def item(x):
    return {"gap": list(x)} if isinstance(x, client.Gap) else {"env": x}

def take(n, **kw):
    it = client.subscribe(channel, **kw)
    try:
        return [item(next(it)) for _ in range(n)]
    finally:
        it.close()

channel = client.open_channel(args["addr"])  # the token: TIANWANG_TOKEN
emit(replay=take(3, topics=["gnss/+/fix"], from_seq=1))
emit(resume=take(args["resume_count"], topics=["gnss/+/fix"], from_seq=args["resume"]))
emit(live="subscribing")  # from the journal's next seq, with a token given as an argument
emit(live=take(3, topics=["test/live/#"], from_seq=args["live"], token=args["token"]))
"""
)


def check_build_requirements():
    """`pip wheel --no-build-isolation` builds with what this venv has: it must meet both
    pyproject.toml files' [build-system] requires (a fresh venv's setuptools does not)."""
    unmet = []
    for path in PYPROJECTS:
        for text in tomllib.loads(path.read_text())["build-system"]["requires"]:
            req = Requirement(text)
            try:
                have = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                have = None
            if have is None or not req.specifier.contains(have, prereleases=True):
                unmet.append(f"{text} (have {have})")
    if unmet:
        pytest.fail(f"build requirements missing from {sys.prefix}: {', '.join(unmet)}; run `make install`")


def pip_wheel(source, out, env):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    check_build_requirements()
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".hypothesis",
            ".benchmarks",
            "tests",
            "bench",
            "*.so",
            "_speedups.c",
            "*_pb2.py",
            "*_pb2.pyi",
            "*_pb2_grpc.py",
            "*_pb2_grpc.pyi",
        ),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_REQUIRE_CEXT", "GATEWAY_NO_CEXT")}
    return {
        "gateway": pip_wheel(source, tmp / "gateway", dict(env, GATEWAY_NO_CEXT="1")),
        "proto": pip_wheel(source / "proto", tmp / "proto", env),
    }


def names(wheel):
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def read(wheel, name):
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name).decode()


def unpack(wheel, dest):
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest)
    return dest


def run_isolated(code, path, *args, env=None):
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith("PYTHON")}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, json.dumps([str(p) for p in path]), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_gateway_wheel_holds_one_import_name_with_every_source_folder_under_it(wheels):
    files = names(wheels["gateway"])
    assert {n.split("/")[0] for n in files} == {"tianwang", f"tianwang-{VERSION}.dist-info"}

    expected = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT / folder)
            if (
                path.suffix in (".py", ".pyx", ".pxd", ".pxi")
                and "__pycache__" not in rel.parts
                and path.name not in GENERATED
            ):
                expected.add(f"{package}/{rel.as_posix()}")
    expected |= {f"tianwang/v1/{name}" for name in (*GENERATED, "gateway.proto", "py.typed")}
    assert sorted(expected - files) == []

    drivers = sorted(p.parent.name for p in (ROOT / "drivers").glob("*/__init__.py"))
    assert {"beidou", "jt808"} <= set(drivers)
    assert {f"tianwang/drivers/{driver}/__init__.py" for driver in drivers} <= files
    # the cext twins, beside the Cython sources; GATEWAY_NO_CEXT=1 built no extension
    assert {"tianwang/cext/frame7e_py.py", "tianwang/cext/_speedups.pyx", "tianwang/cext/_speedups.pxd"} <= files
    assert [n for n in files if n.endswith((".so", ".pyd", ".c"))] == []


def test_gateway_wheel_entry_points_name_tianwang_targets_that_import(wheels, tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    eps = configparser.ConfigParser(delimiters=("=",))
    eps.optionxform = str
    eps.read_string(read(wheels["gateway"], f"tianwang-{VERSION}.dist-info/entry_points.txt"))
    assert dict(eps["console_scripts"]) == project["scripts"] == {"tianwang": "tianwang.gateway.cli.main:main"}
    drivers = dict(eps["tianwang.drivers"])
    assert drivers == project["entry-points"]["tianwang.drivers"] and {"beidou", "jt808"} <= set(drivers)
    targets = [*eps["console_scripts"].values(), *drivers.values()]
    assert all(t.startswith("tianwang.") for t in targets)

    # from the unpacked wheel, with the venv's site-packages for the dependencies but without its
    # .pth files (so without the editable install): every target imports from the wheel
    unpacked = unpack(wheels["gateway"], tmp_path / "wheel")
    path = [unpacked, *site.getsitepackages()]
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_REQUIRE_CEXT", "GATEWAY_NO_CEXT")}
    code = (
        ISOLATED_PRELUDE
        + """
import importlib
out = {}
for target in json.loads(sys.argv[2]):
    module, _, attr = target.partition(":")
    m = importlib.import_module(module)
    out[target] = [m.__file__, type(getattr(m, attr)).__name__]
import tianwang.gateway.framing as framing
out["USING_CEXT"] = framing.USING_CEXT
print(json.dumps(out))
"""
    )
    r = run_isolated(code, path, json.dumps(targets), env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out.pop("USING_CEXT") is False  # this wheel has no extension, and the editable one is out of reach
    for target in targets:
        file, kind = out[target]
        assert file.startswith(str(unpacked) + os.sep), (target, file)
    assert out["tianwang.gateway.cli.main:main"][1] == "function"
    assert {out[t][1] for t in drivers.values()} == {"DriverSpec"}

    # `python -m tianwang drivers` from the wheel finds the drivers through its entry points
    r = run_isolated(
        ISOLATED_PRELUDE
        + """
import runpy
sys.argv = ["tianwang", "drivers"]
runpy.run_module("tianwang", run_name="__main__")
""",
        path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines()[1:]}
    assert set(drivers) <= listed


def test_stubs_wheel_holds_tianwang_v1_alone(wheels):
    stubs = wheels["proto"]
    dist_info = f"tianwang_proto-{VERSION}.dist-info"
    files = names(stubs)
    assert {n for n in files if not n.startswith(dist_info + "/")} == {
        f"tianwang/v1/{name}"
        for name in ("__init__.py", "client.py", "jetstream.py", "gateway.proto", "py.typed", *GENERATED)
    }
    assert f"{dist_info}/entry_points.txt" not in files  # no command: that is the gateway's

    meta = email.parser.Parser().parsestr(read(stubs, f"{dist_info}/METADATA"))
    assert (meta["Name"], meta["Version"]) == ("tianwang-proto", VERSION)
    assert meta["Requires-Python"] == ">=3.11" and meta["License-Expression"] == "Apache-2.0"
    all_requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    requires = {r.name: r for r in all_requires if r.marker is None}
    assert set(requires) == STUB_DEPENDENCIES
    # the NATS reader's client library is an extra: `pip install tianwang-proto[nats]`
    assert {r.name for r in all_requires if r.marker is not None} == {"nats-py"}
    assert "nats" in meta.get_all("Provides-Extra")
    # the floors are what the generated modules check at import
    grpc_version = re.search(
        r"^GRPC_GENERATED_VERSION = '(.+)'$", read(stubs, "tianwang/v1/gateway_pb2_grpc.py"), re.M
    )[1]
    protobuf_version = re.search(r"^# Protobuf Python Version: (.+)$", read(stubs, "tianwang/v1/gateway_pb2.py"), re.M)[
        1
    ]
    assert str(requires["grpcio"].specifier) == f">={grpc_version}"
    assert str(requires["protobuf"].specifier) == f">={protobuf_version}"

    # the gateway ships the same generated modules, so it needs the same floors
    gateway_meta = email.parser.Parser().parsestr(read(wheels["gateway"], f"tianwang-{VERSION}.dist-info/METADATA"))
    gateway_requires = {Requirement(r).name: Requirement(r) for r in gateway_meta.get_all("Requires-Dist")}
    assert gateway_requires["grpcio"].specifier == requires["grpcio"].specifier
    assert gateway_requires["protobuf"].specifier == requires["protobuf"].specifier

    # the contract is the same in both wheels
    for name in ("client.py", "jetstream.py", "gateway.proto", *GENERATED):
        assert read(stubs, f"tianwang/v1/{name}") == read(wheels["gateway"], f"tianwang/v1/{name}"), name


def dependency_closure(requirements):
    """The installed distributions `requirements` pull in, transitively."""
    found = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in found:
            found[name] = importlib.metadata.distribution(req.name)
            todo += [Requirement(r) for r in found[name].requires or ()]
    return found


def link_distributions(dists, dest):
    """A folder with the files of `dists` alone, symlinked from site-packages."""
    for dist in dists:
        for f in dist.files:
            if f.parts[0] == ".." or "__pycache__" in f.parts:
                continue
            target = dest / f
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(dist.locate_file(f))
    return dest


async def test_subscriber_with_only_the_stubs_replays_resumes_and_sees_gaps(wheels, tmp_path):
    stubs = unpack(wheels["proto"], tmp_path / "stubs")
    meta = email.parser.Parser().parsestr((stubs / f"tianwang_proto-{VERSION}.dist-info" / "METADATA").read_text())
    closure = dependency_closure(meta.get_all("Requires-Dist"))
    assert STUB_DEPENDENCIES <= set(closure) and not {"uvloop", "pydantic", "pyserial"} & set(closure)
    deps = link_distributions(closure.values(), tmp_path / "deps")

    async with running(base_config([], journal={"max_bytes": "64KiB"})) as gw:
        published = {}
        for i in range(1500):  # more than the journal keeps: replaying from seq 1 starts with a Gap
            device = f"bd-{i % 3}"
            seq = gw.router.publish(f"gnss/{device}/fix", device, {"lat": 31.0 + i * 1e-6, "lon": 121.5, "i": i})
            published[seq] = {"device_id": device, "topic": f"gnss/{device}/fix", "i": i}
        first, last = gw.journal.first_seq, gw.journal.last_seq
        assert first > 1
        args = {
            "addr": f"127.0.0.1:{gw.port}",
            "resume": last - 4,
            "resume_count": 5,
            "live": gw.journal.next_seq,
            "token": READ,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["TIANWANG_TOKEN"] = GNSS_ONLY  # may read gnss/#, not test/live/#
        env.pop("TIANWANG_ADDR", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            SUBSCRIBER,
            json.dumps([str(stubs), str(deps)]),
            json.dumps(args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )

        async def line():
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not raw:
                await proc.wait()
                raise AssertionError(f"subscriber exited {proc.returncode}: {(await proc.stderr.read()).decode()}")
            return json.loads(raw)

        def check(envelope):
            want = published[envelope["seq"]]
            assert (envelope["topic"], envelope["device_id"], envelope["payload"]["i"]) == (
                want["topic"],
                want["device_id"],
                want["i"],
            )
            assert envelope["payload"]["lon"] == 121.5 and envelope["gateway_time_ns"] > 0

        try:
            isolation = (await line())["isolation"]
            assert isolation["tianwang_file"] is None  # a namespace package: the stubs hold no tianwang/__init__.py
            assert isolation["tianwang_path"] == [str(stubs / "tianwang")]
            assert isolation["client"] == str(stubs / "tianwang" / "v1" / "client.py")
            assert isolation["importable"] == []  # neither the gateway nor its dependencies

            replay = (await line())["replay"]
            assert replay[0] == {"gap": [1, first - 1, "retention"]}
            assert [r["env"]["seq"] for r in replay[1:]] == [first, first + 1]
            for r in replay[1:]:
                check(r["env"])

            resume = (await line())["resume"]
            assert [r["env"]["seq"] for r in resume] == list(range(last - 4, last + 1))
            for r in resume:
                check(r["env"])

            assert (await line()) == {"live": "subscribing"}
            seqs = [gw.router.publish(f"test/live/{n}", "live", {"n": n}) for n in range(3)]
            live = (await line())["live"]
            assert [(r["env"]["seq"], r["env"]["topic"], r["env"]["payload"]) for r in live] == [
                (seq, f"test/live/{n}", {"n": n}) for n, seq in enumerate(seqs)
            ]
            assert await asyncio.wait_for(proc.wait(), 30) == 0, (await proc.stderr.read()).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
