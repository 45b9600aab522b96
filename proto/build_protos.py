"""protoc for tianwang/v1/*.proto at build time, shared by both distributions: setup.py at the
repository root (`tianwang`) and proto/setup.py (`tianwang-proto`) import it. The generated modules
are written beside the .proto sources and never committed.

Both distributions ship py.typed, so every generated module has its stub: protoc's own `--pyi_out`
types the messages (gateway_pb2.pyi) and mypy-protobuf's `protoc-gen-mypy_grpc` the service stubs
(gateway_pb2_grpc.pyi), which grpcio-tools does not write.

This file is a build script, not part of either distribution.
"""

import glob
import os
import re
import shutil
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
V1 = os.path.join(HERE, "tianwang", "v1")


GRPC_STUB_PLUGIN = "protoc-gen-mypy_grpc"  # mypy-protobuf's console script (a [build-system] requirement)


def _grpc_stub_plugin():
    """The path of mypy-protobuf's protoc plugin. Under pip's build isolation its scripts folder is
    on PATH; with --no-build-isolation it sits beside this interpreter (an unactivated venv's bin/)."""
    candidates = [shutil.which(GRPC_STUB_PLUGIN)]
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidates.append(os.path.join(folder, GRPC_STUB_PLUGIN))
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise SystemExit(f"{GRPC_STUB_PLUGIN} not found: install mypy-protobuf (a build requirement)")


def generate_protos():
    """Run protoc (from grpcio-tools) on tianwang/v1/*.proto, writing the modules and their stubs
    beside them."""
    import grpc_tools
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    plugin = _grpc_stub_plugin()
    for proto in sorted(glob.glob(os.path.join(V1, "*.proto"))):
        args = [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            f"--grpc_python_out={HERE}",
            f"--plugin={GRPC_STUB_PLUGIN}={plugin}",
            f"--mypy_grpc_out={HERE}",
            proto,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


def runtime_requirements():
    """grpcio, protobuf: each generated module checks at import that its runtime is at least the
    version of the generator that wrote it (grpcio-tools 1.63+, protoc 26+), so the floors are read
    from the generated code. Older generators write no such check, and no floor is set."""
    paths = sorted(glob.glob(os.path.join(V1, "*_pb2*.py")))
    if not paths:
        raise SystemExit(f"no generated modules in {V1}: run generate_protos() first")
    floors = {"grpcio": (), "protobuf": ()}
    patterns = {
        "protobuf": r"^# Protobuf Python Version: ([0-9]+(?:\.[0-9]+)*)$",
        "grpcio": r"^GRPC_GENERATED_VERSION = '([0-9]+(?:\.[0-9]+)*)'$",
    }
    for path in paths:
        with open(path) as f:
            text = f.read()
        for name, pattern in patterns.items():
            m = re.search(pattern, text, re.M)
            if m:
                floors[name] = max(floors[name], tuple(int(p) for p in m.group(1).split(".")))
    return [name + (">=" + ".".join(map(str, v)) if v else "") for name, v in floors.items()]
