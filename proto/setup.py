"""Build `tianwang-proto`: the gRPC contract for subscribers, nothing of the gateway.

    tianwang/v1/  -> tianwang.v1   gateway.proto, the modules protoc generates from it at build
                                   time, and client.py (a small client helper)

tianwang/__init__.py and __main__.py belong to the gateway distribution and are left out, so with
only these stubs installed `tianwang` is an implicit namespace package. The grpcio and protobuf
floors are those the generated code checks at import (see build_protos.runtime_requirements).
"""

import importlib.util
import os

from setuptools import setup

# build_protos.py beside this file, shared with the root setup.py (loaded by path, as there)
_spec = importlib.util.spec_from_file_location(
    "build_protos", os.path.join(os.path.dirname(os.path.abspath(__file__)), "build_protos.py")
)
build_protos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_protos)

# every command needs the generated modules: the wheel ships them and the metadata's floors come
# from them
build_protos.generate_protos()

setup(install_requires=[*build_protos.runtime_requirements(), "msgpack>=1.0"])
