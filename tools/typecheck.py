"""mypy over the `tianwang` package, read from the repository's own folders.

setup.py maps folders into one import name (proto/tianwang -> tianwang, gateway/ -> tianwang.gateway,
drivers/ -> tianwang.drivers, cext/ -> tianwang.cext), and the editable install resolves that mapping
with an import hook, which static tools do not run. This script mirrors the mapping as a tree of
relative symbolic links, build/typing/tianwang/, that mypy (`mypy_path` in pyproject.toml) and
editors (pyright's `extraPaths`) read like an installed package. Links to folders, so a new module
is seen at once; only a new mapping in setup.py needs the tree made again.

It then runs mypy on the package and prints every path as the repository's file (gateway/app.py, not
build/typing/tianwang/gateway/app.py), so an error points at what to edit.

    python tools/typecheck.py            the link tree, then mypy (`make lint` runs this)
    python tools/typecheck.py --tree     the link tree only (`make install` runs this, for editors)
    python tools/typecheck.py ARGS...    extra arguments go to mypy
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typing"


def package_dirs() -> dict[str, str]:
    """setup.py's PACKAGE_DIRS (import package -> repository folder), read without running setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text(), "setup.py")
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PACKAGE_DIRS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
    raise SystemExit("setup.py: no PACKAGE_DIRS mapping found")


def _link(link: Path, target: Path) -> None:
    want = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == want:
            return
        link.unlink()
    elif link.exists():
        raise SystemExit(f"{link} exists and is not a link: remove {TREE} and run again")
    link.symlink_to(want, target_is_directory=target.is_dir())


def make_tree() -> Path:
    """Create or refresh build/typing/: one real folder per mapped package whose own folder maps
    subpackages beneath it (the root, `tianwang`), links for everything else."""
    mapping = package_dirs()
    roots = {pkg for pkg in mapping if any(other.startswith(pkg + ".") for other in mapping)}
    for pkg, folder in sorted(mapping.items()):
        dest = TREE.joinpath(*pkg.split("."))
        source = ROOT / folder
        if pkg in roots:
            if dest.is_symlink():
                dest.unlink()
            dest.mkdir(parents=True, exist_ok=True)
            wanted = {child.name for child in source.iterdir() if child.name != "__pycache__"}
            wanted |= {sub.split(".")[len(pkg.split("."))] for sub in mapping if sub.startswith(pkg + ".")}
            for child in dest.iterdir():  # links whose source went away
                if child.is_symlink() and child.name not in wanted:
                    child.unlink()
            for child in source.iterdir():
                if child.name != "__pycache__":
                    _link(dest / child.name, child)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link(dest, source)
    return TREE


_PATH = re.compile(r"^(build/typing/[^:\s]+)(.*)$")


def repository_path(line: str) -> str:
    """A mypy output line with its build/typing/... path replaced by the file the link points at."""
    m = _PATH.match(line)
    if m is None:
        return line
    real = Path(os.path.realpath(ROOT / m.group(1)))
    try:
        return real.relative_to(ROOT).as_posix() + m.group(2)
    except ValueError:  # a link that leaves the repository: keep what mypy said
        return line


def main(argv: list[str]) -> int:
    make_tree()
    if argv == ["--tree"]:
        print(f"typing tree: {TREE.relative_to(ROOT)}/ (mypy_path, pyright extraPaths)")
        return 0
    # mypy reads [tool.mypy] in pyproject.toml: mypy_path = build/typing, packages = tianwang
    proc = subprocess.run([sys.executable, "-m", "mypy", *argv], cwd=ROOT, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        print(repository_path(line))
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
