"""Build: the `cext._speedups` Cython extension and the generated `tianwang.v1` gRPC modules.

GATEWAY_NO_CEXT=1 skips the extension (the pure-Python twins run instead). Without it, a failed
compile fails the build: there is no silent fallback.
"""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

ROOT = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(ROOT, "proto")


def generate_protos():
    """Run protoc (from grpcio-tools) on proto/tianwang/v1/*.proto, writing beside the sources."""
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(glob.glob(os.path.join(PROTO_ROOT, "tianwang", "v1", "*.proto")))
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for proto in protos:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={PROTO_ROOT}",
            f"--pyi_out={PROTO_ROOT}",
            f"--grpc_python_out={PROTO_ROOT}",
            proto,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


class BuildPyWithProtos(build_py):
    def run(self):
        generate_protos()
        super().run()


class EggInfoWithProtos(egg_info):
    # Editable installs (pip install -e .) go through egg_info but may not run build_py in a way
    # that leaves files in the tree; generating here keeps the source tree importable.
    def run(self):
        generate_protos()
        super().run()


def extensions():
    if os.environ.get("GATEWAY_NO_CEXT"):
        print("GATEWAY_NO_CEXT set: building without cext._speedups (pure-Python twins)", file=sys.stderr)
        return []
    from Cython.Build import cythonize

    ext = Extension(
        "cext._speedups",
        ["cext/_speedups.pyx"],
        extra_compile_args=["-O3"],
    )
    return cythonize(
        [ext],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        quiet=True,
    )


setup(
    packages=[
        "gateway",
        "cext",
        "drivers",
        "drivers.beidou",
        "drivers.signal",
        "tianwang",
        "tianwang.v1",
    ],
    package_dir={"": ".", "tianwang": "proto/tianwang"},
    package_data={"cext": ["*.pyx", "*.pxd", "*.pxi"], "tianwang.v1": ["*.proto", "*.pyi"]},
    ext_modules=extensions(),
    cmdclass={"build_py": BuildPyWithProtos, "egg_info": EggInfoWithProtos},
    zip_safe=False,
)
