"""The gateway's exception hierarchy.

Every error the gateway raises on purpose derives from `GatewayError` and from the builtin it
resembles, so callers can catch either. Raw library exceptions (serial, grpc, zeep, aiohttp) are
wrapped into these at the driver edge.
"""

import logging
import re

# `scheme://user:password@host...`: everything between `//` and the last `@` before the path
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*(?:@[^/\s@]*)*@")


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError, ValueError):
    """A configuration file or value is invalid.

    `problems` holds `(path, reason)` pairs, one per problem, with `path` spelled
    `devices[2].url` the way `tianwang check` prints it. `warnings` holds the `(path, reason)` warnings
    the readable parts of the config deserve, so `check` shows everything in one run.
    """

    def __init__(self, problems, warnings=()):
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = list(problems)
        self.warnings = list(warnings)
        super().__init__("; ".join(f"{p}: {r}" if p else r for p, r in self.problems))


class FrameError(GatewayError, ValueError):
    """Bytes that cannot be a frame of the protocol at hand."""


class TopicError(GatewayError, ValueError):
    """A malformed topic or topic pattern."""


class DriverError(GatewayError, RuntimeError):
    """A driver could not be found, loaded or started."""


class DeviceError(GatewayError, ConnectionError):
    """A device failed: the link dropped, it answered nonsense, or refused to open."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A device did not answer in time."""


class CommandError(GatewayError, RuntimeError):
    """A command could not be carried out. `code` is the CommandReply code."""

    def __init__(self, code, message, result=None):
        self.code = code
        self.message = message
        self.result = result or {}
        super().__init__(f"{code}: {message}")


class AuthError(GatewayError, PermissionError):
    """A request without valid credentials (`unauthenticated`) or beyond them."""

    def __init__(self, message, unauthenticated=False):
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
