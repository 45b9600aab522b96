"""Driver registry: every driver, built-in or third-party, arrives through the `tianwang.drivers`
entry-point group and registers a `DriverSpec` (tianwang.gateway.lifecycle.driver).

`TIANWANG_DRIVER_MODULES` (comma-separated module names, each with a module-level `SPEC` or `SPECS`)
adds drivers that are not installed as a distribution: handy while writing a driver on site, and
how the test suite loads its test-only driver into a gateway subprocess.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points

from tianwang.gateway.errors import DriverError
from tianwang.gateway.lifecycle.driver import DriverSpec

log = logging.getLogger("tianwang.registry")
GROUP = "tianwang.drivers"


class Registry:
    def __init__(self):
        self._specs: dict[str, DriverSpec] = {}
        self.errors: dict[str, str] = {}  # name -> why it could not load

    def register(self, spec: DriverSpec) -> None:
        if not isinstance(spec, DriverSpec):
            raise DriverError(f"not a DriverSpec: {spec!r}")
        if spec.kind not in ("device", "listener"):
            raise DriverError(f"driver {spec.name!r}: kind must be 'device' or 'listener'")
        old = self._specs.get(spec.name)
        if old is not None and old is not spec:
            raise DriverError(f"two drivers named {spec.name!r}")
        self._specs[spec.name] = spec

    def get(self, name: str) -> DriverSpec | None:
        return self._specs.get(name)

    def require(self, name: str) -> DriverSpec:
        spec = self._specs.get(name)
        if spec is None:
            why = self.errors.get(name)
            raise DriverError(f"unknown driver {name!r}" + (f": {why}" if why else ""))
        return spec

    def specs(self) -> list[DriverSpec]:
        return sorted(self._specs.values(), key=lambda s: s.name)

    def load_entry_points(self) -> None:
        for ep in entry_points(group=GROUP):
            try:
                self._add(ep.load())
            except Exception as exc:  # a broken plugin must not take the gateway down
                self.errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.error("driver %s (%s) failed to load: %s", ep.name, ep.value, exc)

    def load_modules(self, names) -> None:
        for name in names:
            name = name.strip()
            if not name:
                continue
            try:
                mod = importlib.import_module(name)
            except Exception as exc:
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                log.error("driver module %s failed to import: %s", name, exc)
                continue
            found = getattr(mod, "SPECS", None) or [getattr(mod, "SPEC", None)]
            for spec in found:
                if spec is None:
                    self.errors[name] = "module has neither SPEC nor SPECS"
                    continue
                self._add(spec)

    def _add(self, obj):
        for spec in obj if isinstance(obj, (list, tuple)) else [obj]:
            self.register(spec)


_default: Registry | None = None


def default_registry() -> Registry:
    """Entry-point drivers plus TIANWANG_DRIVER_MODULES, loaded once per process."""
    global _default
    if _default is None:
        reg = Registry()
        reg.load_entry_points()
        reg.load_modules(os.environ.get("TIANWANG_DRIVER_MODULES", "").split(","))
        _default = reg
    return _default
