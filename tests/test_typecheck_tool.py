"""tools/typecheck.py: the link tree that lets mypy and editors resolve `tianwang.*` to the
repository's folders (setup.py's mapping), and mypy's paths printed as the repository's files."""

import importlib.util
import os

from gw import ROOT


def load_tool():
    spec = importlib.util.spec_from_file_location("typecheck", ROOT / "tools" / "typecheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_maps_every_package_of_setup_py_to_its_folder():
    tool = load_tool()
    mapping = tool.package_dirs()
    assert mapping["tianwang.gateway"] == "gateway" and mapping["tianwang"] == "proto/tianwang"
    tree = tool.make_tree()
    for package, folder in mapping.items():
        if package == "tianwang":  # a real folder holding links: its subpackages come from other folders
            continue
        linked = tree.joinpath(*package.split("."))
        assert linked.is_symlink() and linked.resolve() == (ROOT / folder).resolve(), package
    # the root package's own modules and subpackages are links into proto/tianwang/
    assert (tree / "tianwang" / "v1" / "client.py").resolve() == ROOT / "proto" / "tianwang" / "v1" / "client.py"
    assert (tree / "tianwang" / "__init__.py").resolve() == ROOT / "proto" / "tianwang" / "__init__.py"
    # links are relative: a checkout that moves keeps a working tree
    assert not os.path.isabs(os.readlink(tree / "tianwang" / "gateway"))


def test_a_second_run_keeps_the_tree_and_a_stale_link_goes():
    tool = load_tool()
    tree = tool.make_tree()
    stale = tree / "tianwang" / "gone.py"
    stale.symlink_to("nowhere.py")
    tool.make_tree()
    assert not stale.is_symlink()
    assert (tree / "tianwang" / "drivers").is_symlink()


def test_mypy_paths_are_printed_as_the_repository_files():
    tool = load_tool()
    tool.make_tree()
    line = "build/typing/tianwang/gateway/datapath/fanout.py:12: error: something  [code]"
    assert tool.repository_path(line) == "gateway/datapath/fanout.py:12: error: something  [code]"
    line = "build/typing/tianwang/v1/client.py:3: note: x"
    assert tool.repository_path(line) == "proto/tianwang/v1/client.py:3: note: x"
    assert tool.repository_path("Found 2 errors in 1 file") == "Found 2 errors in 1 file"
