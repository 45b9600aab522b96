"""The gateway's exception hierarchy.

Every error the gateway raises on purpose derives from `GatewayError` and from the builtin it
resembles, so callers can catch either. Raw library exceptions (serial, grpc, zeep, aiohttp) are
wrapped into these at the driver edge.
"""

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

# `scheme://user:password@host...`: everything between `//` and the last `@` before the path
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*(?:@[^/\s@]*)*@")


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError, ValueError):
    """A configuration file or value is invalid.

    `problems` holds `(path, reason)` pairs, one per problem, with `path` spelled
    `devices[2].url` the way `tianwang check` prints it. `warnings` holds the `(path, reason)` warnings
    the readable parts of the config deserve, so `check` shows everything in one run. `names` maps
    an entry's position to its id (`{"devices[3]": "tsc-0017"}`): `lines()` and the message name
    the entry both ways (`devices[3] (tsc-0017).usrname`), so it can be found in a long file.
    """

    def __init__(
        self,
        problems: str | Iterable[tuple[str, str]],
        warnings: Iterable[tuple[str, str]] = (),
        names: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = list(problems)
        self.warnings = list(warnings)
        self.names = dict(names or {})
        super().__init__("; ".join(self.lines()))

    def named(self, path: str) -> str:
        """`devices[3].url` -> `devices[3] (tsc-0017).url` when entry 3 has an id."""
        return name_path(path, self.names)

    def lines(self) -> list[str]:
        """One `path: reason` line per problem, entries named by their ids."""
        return [f"{self.named(p)}: {r}" if p else r for p, r in self.problems]

    def warning_lines(self) -> list[str]:
        return [f"{self.named(p)}: {r}" if p else r for p, r in self.warnings]


def name_path(path: str, names: Mapping[str, str]) -> str:
    """`devices[3].url` -> `devices[3] (tsc-0017).url` when `names` has `devices[3]`."""
    head, sep, rest = path.partition("]")
    if not sep:
        return path
    dev_id = names.get(head + "]")
    return f"{head}] ({dev_id}){rest}" if dev_id else path


class FrameError(GatewayError, ValueError):
    """Bytes that cannot be a frame of the protocol at hand."""


class TopicError(GatewayError, ValueError):
    """A malformed topic or topic pattern."""


class DriverError(GatewayError, RuntimeError):
    """A driver could not be found, loaded or started."""


class DeviceError(GatewayError, ConnectionError):
    """A device failed: the link dropped, it answered nonsense, or refused to open."""


class AuthenticationFailed(DeviceError):
    """A device (or server) refused the gateway's credentials. Retrying the same ones on the usual
    backoff would lock the user out (cameras lock a user, or the client's address, after 5-7
    failures), so the supervisor waits minutes before the next attempt, or for a reload."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A device did not answer in time."""


class CommandError(GatewayError, RuntimeError):
    """A command could not be carried out. `code` is the CommandReply code."""

    def __init__(self, code: str, message: str, result: dict[Any, Any] | None = None) -> None:
        self.code = code
        self.message = message
        self.result = result or {}
        super().__init__(f"{code}: {message}")


class AuthError(GatewayError, PermissionError):
    """A request without valid credentials (`unauthenticated`) or beyond them."""

    def __init__(self, message: str, unauthenticated: bool = False) -> None:
        self.unauthenticated = unauthenticated
        super().__init__(message)


def describe(exc: BaseException) -> str:
    """`ExceptionName: text` (the name alone when the text is empty): a health reason or log line
    that says what failed even when the library's message is blank (`TimeoutError()`). URL
    credentials in the text are redacted (`redact`)."""
    text = redact(str(exc))
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def redact(text: str) -> str:
    """`text` with the user information of every URL in it replaced by `***`
    (`nats://user:pw@host:4222` -> `nats://***@host:4222`): what the gateway logs, publishes or
    reports never carries a password that came in a URL."""
    if "@" not in text:
        return text
    return _USERINFO_RE.sub(r"\1***@", text)


class RedactingFilter(logging.Filter):
    """A logging filter (on a handler) that redacts URL credentials in every record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as it always does
            return True
        if "@" in message:
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
