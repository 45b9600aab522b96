"""protoc for tianwang/v1/*.proto at build time, shared by both distributions: setup.py at the
repository root (`tianwang`) and proto/setup.py (`tianwang-proto`) import it. The generated modules
are written beside the .proto sources and never committed.

This file is a build script, not part of either distribution.
"""
import glob
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
V1 = os.path.join(HERE, "tianwang", "v1")


def generate_protos():
    """Run protoc (from grpcio-tools) on tianwang/v1/*.proto, writing the modules beside them."""
    from grpc_tools import protoc
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for proto in sorted(glob.glob(os.path.join(V1, "*.proto"))):
        args = [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            f"--grpc_python_out={HERE}",
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
