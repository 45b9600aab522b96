"""The bases every config model stands on: frozen models that reject unknown keys, secrets given
as `<name>_env` or `<name>_file`, and HOST:PORT checking. Kept apart from `config` so that the
models of each section (`config`, `config_links`) import them without importing each other."""

from __future__ import annotations

import ipaddress
import os
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Model(BaseModel):
    """Base of every config model: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretsModel(Model):
    """A model with secret fields. For each name in `__secrets__`, exactly one of `<name>`,
    `<name>_env` and `<name>_file` may be given; after validation `<name>` holds the value."""

    __secrets__: ClassVar[tuple[str, ...]] = ()
    __required_secrets__: ClassVar[tuple[str, ...]] = ()

    @field_validator("*")
    @classmethod
    def _secret_source(cls, value, info):
        # checked per field, so a missing variable is reported even when other keys are wrong too
        name = info.field_name
        if value is None:
            return value
        if name.endswith("_env") and name[:-4] in cls.__secrets__:
            if not os.environ.get(value):
                raise ValueError(f"environment variable {value} is not set or empty")
        elif name.endswith("_file") and name[:-5] in cls.__secrets__:
            _read_secret_file(value)
        return value

    @model_validator(mode="after")
    def _resolve_secrets(self):
        for name in self.__secrets__:
            inline = getattr(self, name)
            env = getattr(self, f"{name}_env")
            path = getattr(self, f"{name}_file")
            given = [k for k, v in ((name, inline), (f"{name}_env", env), (f"{name}_file", path)) if v is not None]
            if len(given) > 1:
                raise PydanticCustomError(
                    "secret", "{key}: give only one of {options}", {"key": given[1], "options": ", ".join(given)}
                )
            if not given:
                if name in self.__required_secrets__:
                    raise PydanticCustomError(
                        "secret",
                        "{key}: required (as {key}_env or {key}_file)",
                        {"key": name},
                    )
                continue
            if env is not None:
                value = os.environ[env]
            elif path is not None:
                value = _read_secret_file(path)
            else:
                continue
            object.__setattr__(self, name, SecretStr(value))
        return self


def _read_secret_file(path: str) -> str:
    """The secret in `path` without its trailing newline. Raises ValueError."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def parse_hostport(value: str, what: str = "address") -> tuple[str, int]:
    """'127.0.0.1:50051' / '[::1]:50051' / 'localhost:80' -> (host, port). Raises ValueError."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host, _, port_s = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    if not host:
        raise ValueError(f"{what} {value!r} has no host")
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"{what} {value!r}: port {port_s!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} {value!r}: port {port} is out of range 0-65535")
    return host, port


def check_hostport(value: str) -> str:
    parse_hostport(value)
    return value
