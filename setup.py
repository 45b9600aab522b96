"""Build the `tianwang` distribution: one import package, `tianwang`, mapped from the repository's folders.

    proto/tianwang/  -> tianwang            (the root: version, `python -m tianwang`)
    proto/tianwang/v1 -> tianwang.v1        (generated protobuf/gRPC modules and the client helper)
    gateway/         -> tianwang.gateway    (the core)
    drivers/         -> tianwang.drivers    (one package per protocol)
    cext/            -> tianwang.cext       (the compiled hot path and its pure-Python twins)

Nothing else lands in site-packages. The stubs-only distribution for subscribers, `tianwang-proto`
(tianwang.v1 alone), is built from proto/ by proto/pyproject.toml; both run the same protoc step,
proto/build_protos.py.

GATEWAY_NO_CEXT=1 skips the extension (the pure-Python twins run instead). Without it, a failed
compile fails the build: there is no silent fallback.
"""

import importlib.util
import os
import sys

from setuptools import Extension, find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(ROOT, "proto")


# protoc on proto/tianwang/v1/*.proto: proto/build_protos.py, shared with proto/setup.py. Loaded by
# path, so proto/ (which holds a `tianwang` folder) never goes on sys.path.
_spec = importlib.util.spec_from_file_location("build_protos", os.path.join(PROTO_ROOT, "build_protos.py"))
build_protos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_protos)

# The generated modules are needed by every command: the wheel ships them, and the grpcio and protobuf
# floors below are read from them (generated code refuses an older runtime at import).
build_protos.generate_protos()

# Runtime dependencies (pyproject.toml marks them dynamic because of the two floors).
DEPENDENCIES = [
    "uvloop>=0.19",
    "msgpack>=1.0",
    *build_protos.runtime_requirements(),  # grpcio, protobuf
    "grpcio-health-checking>=1.60",
    "grpcio-reflection>=1.60",
    "pydantic>=2.5",
    "PyYAML>=6.0",
    "prometheus-client>=0.19",
    "pyserial>=3.5",
    "pyserial-asyncio-fast>=0.11",
    "nats-py>=2.6",  # the JetStream bridge (bridges.nats) and `tianwang subscribe --nats`
    # ONVIF cameras: the asyncio SOAP client (WSDLs bundled), the vendor event normaliser Home
    # Assistant uses, and aiohttp (the client's transport; also the webhook and the simulator)
    "onvif-zeep-async>=4.0",
    "onvif-parsers>=2.0",
    "aiohttp>=3.9",
    "rich>=13.0",  # `tianwang top` and the demo's live view: tables redrawn in place on a terminal
    # GB/T 28181 MANSCDP bodies: a hardened parser (entities, DTDs and network off); zeep needs it too
    "lxml>=4.9",
]


def extensions():
    if os.environ.get("GATEWAY_NO_CEXT"):
        print("GATEWAY_NO_CEXT set: building without tianwang.cext._speedups (pure-Python twins)", file=sys.stderr)
        return []
    from Cython.Build import cythonize

    # Cython looks up the .pxd of `tianwang.cext._speedups` by that qualified name, but the sources sit
    # in cext/, not tianwang/cext/. A dotted-name .pxd on the include path (Cython's first lookup)
    # that includes cext/_speedups.pxd points it at the contract without moving any folder.
    shim_dir = os.path.join(ROOT, "build", "cython-include")
    os.makedirs(shim_dir, exist_ok=True)
    shim = os.path.join(shim_dir, "tianwang.cext._speedups.pxd")
    text = f'include "{os.path.join(ROOT, "cext", "_speedups.pxd")}"\n'
    if not os.path.exists(shim) or open(shim).read() != text:
        with open(shim, "w") as f:
            f.write(text)

    ext = Extension(
        "tianwang.cext._speedups",
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
        include_path=[shim_dir],
        quiet=True,
    )


# repository folder -> import package under `tianwang`
PACKAGE_DIRS = {
    "tianwang": "proto/tianwang",
    "tianwang.gateway": "gateway",
    "tianwang.drivers": "drivers",
    "tianwang.cext": "cext",
}


def packages():
    found = ["tianwang"]
    for package, folder in PACKAGE_DIRS.items():
        if package != "tianwang":
            found.append(package)
        found += [f"{package}.{sub}" for sub in find_packages(os.path.join(ROOT, folder))]
    return found


setup(
    packages=packages(),
    package_dir=PACKAGE_DIRS,
    package_data={"tianwang.cext": ["*.pyx", "*.pxd", "*.pxi"], "tianwang.v1": ["*.proto", "*.pyi", "py.typed"]},
    exclude_package_data={"tianwang.cext": ["*.c", "*.html"]},  # Cython's output: the .so is what runs
    install_requires=DEPENDENCIES,
    ext_modules=extensions(),
    zip_safe=False,
)
