"""The house rules that keep the rooms apart, checked on the source tree:

- drivers import the core only through `tianwang.drivers.sdk` (the documented driver surface), and
  never another driver's package: a third-party driver can do everything a built-in one does;
- only the framing switch imports the compiled extension; every twin sits in cext/ beside the piece
  it mirrors (`<piece>.pxi` compiled, `<piece>_decl.pxi` its contract, `<piece>_py.py` the twin);
- the client helper of the stubs distribution (`tianwang.v1`) needs nothing from the gateway;
- the SDK's names all resolve, and importing it loads neither pydantic nor grpc until asked.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gw import ROOT
from tianwang.drivers import sdk
from tianwang.gateway import framing


def imports(path):
    """Every module name `path` imports (absolute imports only; the tree uses no relative ones)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            yield node.lineno, node.module


def sources(folder, pattern="*.py"):
    found = sorted((ROOT / folder).rglob(pattern))
    assert found, f"no {pattern} under {folder}"
    return found


def test_drivers_use_only_the_sdk_and_their_own_package():
    wrong = []
    for path in sources("drivers"):
        rel = path.relative_to(ROOT / "drivers")
        if rel.name == "sdk.py":
            continue
        own = "tianwang.drivers." + rel.parts[0] if len(rel.parts) > 1 else None
        for line, module in imports(path):
            if not module.startswith("tianwang"):
                continue
            allowed = module == "tianwang.drivers.sdk" or (own and (module == own or module.startswith(own + ".")))
            if not allowed:
                wrong.append(f"drivers/{rel}:{line} imports {module}")
    assert wrong == [], "\n".join(wrong)


# the GB/T 28181 modules that open nothing (the uplink is core wiring on top of them)
GB_SANS_IO = {
    f"tianwang.drivers.gb28181.{m}"
    for m in ("sip", "digest", "transaction", "manscdp", "catalog", "ptz", "datum", "sdp", "ids")
}


def test_the_uplink_uses_only_the_gb28181_sans_io_layers():
    """gateway/uplink/ (the gateway as a lower platform) builds on the listener's sans-io layers,
    never on its driver, sockets or session: the listener may change without the uplink noticing."""
    wrong = []
    for path in sources("gateway/uplink"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                # `from tianwang.drivers.gb28181 import sip` names the module sip
                names = [
                    f"{node.module}.{a.name}" if node.module == "tianwang.drivers.gb28181" else node.module
                    for a in node.names
                ]
            else:
                continue
            for module in names:
                if module.startswith("tianwang.drivers") and module not in GB_SANS_IO:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert wrong == [], "\n".join(wrong)


def test_only_the_framing_switch_imports_the_extension():
    wrong = []
    for folder in ("gateway", "drivers", "proto"):
        for path in sources(folder):
            for line, module in imports(path):
                if module.startswith("tianwang.cext") and path != ROOT / "gateway" / "framing.py":
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert wrong == [], "\n".join(wrong)


def test_every_twin_sits_beside_the_piece_it_mirrors():
    pieces = {p.stem for p in (ROOT / "cext").glob("*.pxi") if not p.stem.endswith("_decl")}
    pyx = (ROOT / "cext" / "_speedups.pyx").read_text()
    pxd = (ROOT / "cext" / "_speedups.pxd").read_text()
    twin_modules = set()
    for name, where in framing.TWINS.items():
        module, attr = where.split(":")
        assert module.startswith("tianwang.cext.") and module.endswith("_py"), f"{name}: twin {module} is not in cext/"
        piece = module.removeprefix("tianwang.cext.").removesuffix("_py")
        assert piece in pieces, f"{name}: twin {module} has no compiled piece cext/{piece}.pxi"
        twin_modules.add(piece)
    for piece in pieces:
        assert f'include "{piece}.pxi"' in pyx, f"cext/{piece}.pxi is not included by _speedups.pyx"
        assert (ROOT / "cext" / f"{piece}_decl.pxi").exists(), f"cext/{piece}.pxi has no _decl.pxi contract"
        assert f'include "{piece}_decl.pxi"' in pxd, f"cext/{piece}_decl.pxi is not included by _speedups.pxd"
        assert (ROOT / "cext" / f"{piece}_py.py").exists(), f"cext/{piece}.pxi has no twin cext/{piece}_py.py"
    assert twin_modules <= pieces
    # no twin hides anywhere else
    stray = [str(p.relative_to(ROOT)) for f in ("gateway", "drivers") for p in sources(f) if p.stem.endswith("_py")]
    assert stray == []


def test_framing_types_every_name_by_its_twin():
    """The TYPE_CHECKING imports of gateway/framing.py (what type checkers and editors see) name
    exactly the twins of TWINS (what runs)."""
    tree = ast.parse((ROOT / "gateway" / "framing.py").read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    typed = {
        alias.asname or alias.name: f"{node.module}:{alias.name}"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == framing.TWINS


def test_client_helper_needs_nothing_from_the_gateway():
    for path in sources("proto/tianwang/v1"):
        for line, module in imports(path):
            assert not module.startswith(("tianwang.gateway", "tianwang.drivers", "tianwang.cext")), (
                f"{path.relative_to(ROOT)}:{line} imports {module}"
            )


@pytest.mark.parametrize("name", sorted(set(sdk.__all__) | {"Jt808Framer", "Gbt20999Framer", "NmeaDecoder"}))
def test_every_sdk_name_resolves(name):
    assert getattr(sdk, name) is not None
    assert name in dir(sdk)


def test_sdk_all_lists_every_export():
    # __all__ is written out for static tools; the names that resolve are _EXPORTS'
    assert sorted(sdk.__all__) == sorted(sdk._EXPORTS)


def test_sdk_hot_path_names_are_the_switch_choice():
    assert sdk.Jt808Framer is framing.Jt808Framer
    assert sdk.framing is framing
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        sdk.NoSuchThing  # noqa: B018


def test_sdk_import_is_light():
    probe = (
        "import sys; from tianwang.drivers.sdk import FrameError, Publication, Jt808Framer, describe;"
        "print(sorted(m for m in ('grpc', 'pydantic', 'yaml', 'tianwang.gateway.lifecycle.supervisor') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_python_m_tianwang_is_the_tianwang_command():
    script = Path(sys.executable).parent / "tianwang"  # the console script pip installed beside python
    by_module = subprocess.run([sys.executable, "-m", "tianwang", "--help"], capture_output=True, text=True, timeout=60)
    assert by_module.returncode == 0 and "decode" in by_module.stdout and "simulate" in by_module.stdout
    by_script = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert by_script.returncode == 0 and by_script.stdout == by_module.stdout
