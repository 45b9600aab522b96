"""One summary at the end of a bench run: each benchmark adds its lines under a section, and
bench/conftest.py prints them all together (and writes them to bench/out/summary.txt)."""

SECTIONS: dict[str, list[str]] = {}


def add(section: str, line: str) -> None:
    SECTIONS.setdefault(section, []).append(line)
