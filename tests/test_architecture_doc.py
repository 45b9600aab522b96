"""docs/architecture.md draws every driver the project ships: its flow diagram names each built-in
driver registered under the `tianwang.drivers` entry-point group, so the picture a newcomer reads
first cannot fall behind the code (the traffic-signal driver was once missing from it)."""

import re
import tomllib

from gw import ROOT


def shipped_drivers():
    """The driver names pyproject.toml registers: the built-in drivers of this distribution."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = sorted(project["project"]["entry-points"]["tianwang.drivers"])
    assert names, "pyproject.toml registers no driver"
    return names


def flow_diagram():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## What flows where", 1)[1]
    found = re.search(r"```\n(.*?)```", section, re.S)
    assert found, "docs/architecture.md: no diagram under 'What flows where'"
    return found.group(1)


def test_the_flow_diagram_names_every_shipped_driver():
    diagram = flow_diagram()
    missing = [name for name in shipped_drivers() if not re.search(rf"-->\s+{re.escape(name)}\s", diagram)]
    assert missing == [], f"docs/architecture.md's flow diagram lacks the driver(s) {missing}"


def test_the_flow_diagram_names_no_driver_that_is_not_shipped():
    drawn = set(re.findall(r"-->\s+([a-z0-9_]+)\s+--\+", flow_diagram()))
    assert drawn == set(shipped_drivers()), f"drawn {sorted(drawn)}, shipped {shipped_drivers()}"
