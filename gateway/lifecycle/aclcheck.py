"""`tianwang check`: token patterns that can match no configured device.

A `read` pattern (a topic pattern) or a `control` pattern (over `family/device_id`) that matches
nothing the config can ever publish or command is almost always a slip (`control: ["tsc-1"]`
for `signal/tsc-1`): the gateway accepts it and then refuses the operator's calls without saying
why. So each one is a warning naming the closest pattern that would match.

What the config can match: for every device, `<family>/<id>/...` and `audit/<id>/...`; for every
listener, its own topics and those of any terminal (`<family>/+/...`, since terminals are named
when they dial in). Topics have at least three levels (family, device, channel), control targets
exactly two.
"""

from __future__ import annotations

import difflib

from tianwang.gateway.datapath.auth import patterns_overlap


def _targets(config, registry) -> tuple[list[tuple[str, str]], bool]:
    """(family, device id) of every device and listener (id `+` for a listener's terminals), and
    whether every driver's family is known."""
    out = []
    known = True
    for section, entries in (("devices", config.devices), ("listeners", config.listeners)):
        for dev in entries:
            spec = registry.get(dev.driver) if registry is not None else None
            if spec is None:
                known = False
                continue
            out.append((spec.family, dev.id))
            if section == "listeners":
                out.append((spec.family, "+"))
    return out, known


def _closest(pattern: str, candidates: list[str]) -> str | None:
    """The candidate most like `pattern`, as a whole or by its device level alone."""
    best, score = None, -1.0
    for cand in candidates:
        levels = cand.split("/")
        s = max(
            difflib.SequenceMatcher(None, pattern, cand).ratio(),
            # `tsc-1` for `signal/tsc-1`: the device level alone
            difflib.SequenceMatcher(None, pattern, levels[1] if len(levels) > 1 else cand).ratio(),
        )
        if s > score:
            best, score = cand, s
    return best


def pattern_warnings(config, registry) -> list[tuple[str, str]]:
    """(path, why) for every `read`, `control` and `anonymous_read` pattern that can match no
    configured device, naming the closest one that would."""
    targets, known = _targets(config, registry)
    if not known:
        return []  # a family the check cannot name: it cannot say what matches either
    read_shapes = [f"{family}/{dev}/#" for family, dev in targets]
    read_shapes += [f"audit/{dev}/#" for family, dev in targets if dev != "+"]
    control_shapes = [f"{family}/{dev}" for family, dev in targets]
    read_names = [f"{family}/{dev}/#" for family, dev in targets if dev != "+"]
    control_names = [f"{family}/{dev}" for family, dev in targets if dev != "+"]
    out = []

    def check_read(path, pattern):
        if any(patterns_overlap(pattern, shape) and _deep_enough(pattern) for shape in read_shapes):
            return
        hint = _closest(pattern, read_names)
        shallow = "" if _deep_enough(pattern) else " (topics have three levels or more: family/device/channel)"
        out.append(
            (
                path,
                f"{pattern!r} matches no topic of a configured device{shallow}"
                + (f"; did you mean {hint!r}?" if hint else ""),
            )
        )

    def check_control(path, pattern):
        if any(patterns_overlap(pattern, shape) and _two_levels(pattern) for shape in control_shapes):
            return
        hint = _closest(pattern, control_names)
        out.append(
            (
                path,
                f"{pattern!r} matches no configured device (control patterns are family/device_id)"
                + (f"; did you mean {hint!r}?" if hint else ""),
            )
        )

    for i, token in enumerate(config.auth.tokens):
        for j, pattern in enumerate(token.read):
            check_read(f"auth.tokens[{i}].read[{j}]", pattern)
        for j, pattern in enumerate(token.control):
            check_control(f"auth.tokens[{i}].control[{j}]", pattern)
    for j, pattern in enumerate(config.auth.anonymous_read):
        check_read(f"auth.anonymous_read[{j}]", pattern)
    return out


def _deep_enough(pattern: str) -> bool:
    """Some topic (family/device/channel...) can have as many levels as `pattern` asks."""
    levels = pattern.split("/")
    return levels[-1] == "#" or len(levels) >= 3


def _two_levels(pattern: str) -> bool:
    """Some `family/device_id` can match `pattern` (two levels, or a `#` that allows them)."""
    levels = pattern.split("/")
    return len(levels) == 2 or (levels[-1] == "#" and len(levels) <= 3)
