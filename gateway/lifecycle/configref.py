"""The config reference (docs/config-reference.md), generated from the pydantic models: the core
sections (`gateway`, `auth`, `bridges`, the keys every device and listener entry has) and the config
model of every driver in the registry. Each key with its type, default, constraints and description.

    python -m tianwang.gateway.lifecycle.configref                   # print it
    python -m tianwang.gateway.lifecycle.configref --write FILE      # write it (docs/config-reference.md)
    python -m tianwang.gateway.lifecycle.configref --check FILE      # exit 1 when FILE is not what it prints

The models are the source: a key without a `Field(description=...)` is an error here, so a new key
cannot reach the reference undocumented. Constraints that a validator checks (rather than a
`Field` bound) are spelled out in the description.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from enum import Enum
from typing import Any

import annotated_types as at
from pydantic import BaseModel, ByteSize, SecretStr
from pydantic_core import PydanticUndefined

from tianwang.gateway.lifecycle import config as core

HEADER = """\
# Config reference

<!-- Generated from the config models by `python -m tianwang.gateway.lifecycle.configref --write
docs/config-reference.md`; do not edit by hand (tests/test_guides.py fails when it is stale). -->

Every key of the YAML config that `tianwang run -c FILE` reads and `tianwang check FILE` validates,
taken from the models that validate it. Unknown keys are errors. Sizes take units (`64KiB`,
`256MiB`, `8GiB`); a secret `<name>` is given as exactly one of `<name>_env: VAR` (an environment
variable), `<name>_file: PATH` (a file, without its trailing newline) or `<name>: value` inline
(an error unless `auth.allow_inline_secrets: true`). The [integrator guide](integrator.md) shows complete configs per
device family; [contract.md](contract.md#config) says more about what some keys do.

A key written `a.b` is key `b` of the object `a`; `a[].b` is key `b` of each entry of the list `a`.
"""


class ReferenceError(ValueError):
    """A model field the reference cannot describe (no description)."""


# -- one field -------------------------------------------------------------------------------------
def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_args(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return None


def type_name(annotation) -> str:
    """A reader's name for a field's type: `int`, `float or null`, `list of str`, `size`, `secret`..."""
    union = _union_args(annotation)
    if union is not None:
        named = [type_name(a) for a in union if a is not type(None)]
        text = " or ".join(named)
        return text + " or null" if type(None) in union else text
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = type_name(args[0]) if args else "any"
        return "list of " + ("objects" if args and _is_model(args[0]) else inner)
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"map of {type_name(key)} to {type_name(value)}"
    if annotation is ByteSize:
        return "size"
    if annotation is SecretStr:
        return "secret"
    if _is_model(annotation):
        return "object"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return ", ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, ByteSize):
        return _size(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, (tuple, list, dict)) and not value:
        return "empty"
    return f"`{_value(value)}`"


_BOUNDS = ((at.Ge, ">=", "ge"), (at.Gt, ">", "gt"), (at.Le, "<=", "le"), (at.Lt, "<", "lt"))


def constraints_text(field) -> str:
    """The Field bounds: `>= 1, <= 8192`, `1+ items`, `pattern ^...$`; empty when there are none."""
    out = []
    for item in field.metadata:
        for cls, sign, attr in _BOUNDS:
            if isinstance(item, cls):
                bound = getattr(item, attr)
                out.append(f"{sign} {_size(bound) if field.annotation is ByteSize else _value(bound)}")
        if isinstance(item, at.MinLen):
            out.append(f"at least {_count(item.min_length, field)}")
        if isinstance(item, at.MaxLen):
            out.append(f"at most {_count(item.max_length, field)}")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"matches `{pattern}`")
    return ", ".join(out)


def _count(n: int, field) -> str:
    unit = "item" if typing.get_origin(field.annotation) in (tuple, list) else "character"
    return f"{n} {unit}" + ("" if n == 1 else "s")


def _models_in(annotation) -> list[tuple[type[BaseModel], bool]]:
    """The models a field holds: (model, in a list?)."""
    if _is_model(annotation):
        return [(annotation, False)]
    origin = typing.get_origin(annotation)
    found = []
    for arg in typing.get_args(annotation):
        for model, in_list in _models_in(arg):
            found.append((model, in_list or origin in (tuple, list)))
    return found


def rows(model: Any, prefix: str = "", skip=()) -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, constraints, description) for every field of `model`, nested models
    walked depth first. Raises ReferenceError for a field without a description."""
    out = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = prefix + name
        if not field.description:
            raise ReferenceError(f"{model.__module__}.{model.__qualname__}.{name}: no Field(description=...)")
        out.append((key, type_name(field.annotation), default_text(field), constraints_text(field), field.description))
        for inner, in_list in _models_in(field.annotation):
            out += rows(inner, key + ("[]." if in_list else "."))
    return out


# -- the page --------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(entries) -> list[str]:
    lines = ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
    for key, typ, default, constraints, description in entries:
        lines.append(
            f"| `{key}` | {_cell(typ)} | {_cell(default)} | {_cell(constraints) or '-'} | {_cell(description)} |"
        )
    return lines


def render(registry=None) -> str:
    """The whole reference as Markdown. `registry`: the drivers to include (default: the installed
    ones, entry points only, so the page does not depend on TIANWANG_DRIVER_MODULES)."""
    if registry is None:
        from tianwang.gateway.lifecycle.registry import Registry

        registry = Registry()
        registry.load_entry_points()
    out = [HEADER]
    for name in ("gateway", "auth", "bridges"):
        field = core.Config.model_fields[name]
        description = field.description or ""
        out += [f"## `{name}`", "", description[:1].upper() + description[1:] + ".", ""]
        out += table(rows(field.annotation, name + "."))
        out.append("")
    out += [
        "## `devices[]` and `listeners[]`",
        "",
        "`devices:` lists devices the gateway connects to, `listeners:` servers that devices dial into. Every",
        "entry has these keys, plus those of its driver (below); a listener entry also has `listen`.",
        "",
    ]
    out += table(rows(core.DeviceConfig, "devices[]."))
    out += table(rows(core.ListenerConfig, "listeners[].", skip=core.DeviceConfig.model_fields))[2:]
    out.append("")
    out += [
        "## `uplinks[]`",
        "",
        "Superior GB/T 28181 platforms the gateway registers to as a lower platform "
        "([gb28181-uplink.md](gb28181-uplink.md)).",
        "",
    ]
    out += table(rows(core.UplinkConfig, "uplinks[]."))
    out.append("")
    for spec in registry.specs():
        base = core.ListenerConfig if spec.kind == "listener" else core.DeviceConfig
        section = "listeners" if spec.kind == "listener" else "devices"
        transports = ", ".join(getattr(spec, "transports", ()) or ())
        out += [f"## `driver: {spec.name}`", ""]
        out.append(
            (f"{spec.description}. " if spec.description else "")
            + f"A `{section}:` entry"
            + (f"; transports: {transports}" if transports else "")
            + ". Besides these keys it takes the common ones above."
        )
        out += ["", *table(rows(spec.config_model, skip=base.model_fields)), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tianwang.gateway.lifecycle.configref",
        description="Print the config reference generated from the config models (Markdown).",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="write it to FILE (docs/config-reference.md)")
    group.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from what would be written")
    args = parser.parse_args(argv)
    try:
        text = render()
    except ReferenceError as exc:
        print(f"configref: {exc}", file=sys.stderr)
        return 1
    if args.write:
        try:
            with open(args.write, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            print(f"configref: cannot write {args.write}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        return 0
    if args.check:
        try:
            with open(args.check, encoding="utf-8") as f:
                current = f.read()
        except OSError as exc:
            print(f"configref: cannot read {args.check}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if current != text:
            print(
                f"configref: {args.check} is stale; regenerate it with "
                f"`python -m tianwang.gateway.lifecycle.configref --write {args.check}`",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
