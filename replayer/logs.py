"""structlog set-up: JSON lines on stderr, bound to the range being worked on.

Record contents are never logged; only ranges, counts and reasons.

Every module logs through `get_logger` and binds context through `bound`, never structlog
directly: structlog loads when a line is first logged at the configured level, not at
start-up (its import costs ~70 ms of CPU: it pulls rich's traceback and pretty-printer in),
so a command or a Lambda invocation that logs nothing never loads it. What is bound before
it loads is kept and merged into every line, as structlog's own context is.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from replayer.model import Failure

if TYPE_CHECKING:
    import asyncio
    from types import ModuleType

__all__ = [
    "Logger",
    "bound",
    "clear",
    "configure",
    "contain_loop_errors",
    "enabled",
    "get_logger",
    "load_now",
    "range_context",
]

# structlog's method names and the level each logs at (a method not named here is never dropped).
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class _Setup:
    level: int
    json: bool


_pending: _Setup | None = None  # configured while structlog was not loaded: applied when it loads
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_bound: ContextVar[Mapping[str, Any]] = ContextVar("replayer_log_context", default=_EMPTY)


def _structlog() -> ModuleType:
    """structlog, loaded and configured (as `configure` was last asked) on first use."""
    global _pending
    import structlog

    if _pending is not None:
        setup, _pending = _pending, None
        _apply(setup)
    return structlog


def _drop(*_: object, **__: object) -> None:
    return None


class Logger:
    """A structlog logger, made when a line at the configured level is first logged."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if _pending is not None and _METHOD_LEVELS.get(method, logging.CRITICAL + 1) < _pending.level:
            return _drop  # below the configured level: what structlog's filtering logger does
        if self._logger is None:
            self._logger = _structlog().get_logger(self._name)
        return getattr(self._logger, method)


def load_now() -> None:
    """Load structlog now (a long-running service does at start): a first line logged later, while
    file descriptors have run out, needs no import then."""
    _structlog()


_LOOP_ERRORS_EVERY = 60.0  # seconds between two lines about the same asyncio complaint


def contain_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's unhandled-error reports (e.g. "socket.accept() out of system resource" while file
    descriptors have run out) logged once per kind a minute, with how many there were, and never
    raising: a flood of them can neither fill the log nor stop the service."""
    last: dict[str, tuple[float, int]] = {}  # message -> (when last logged, reports since)
    log = get_logger("replayer.loop")

    def handle(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        try:
            message = str(context.get("message") or "unhandled error in the event loop")
            now = time.monotonic()
            when, since = last.get(message, (-math.inf, 0))
            if now - when < _LOOP_ERRORS_EVERY:
                last[message] = (when, since + 1)
                return
            if len(last) >= 256:
                last.clear()
            last[message] = (now, 0)
            exc = context.get("exception")
            log.error("event_loop_error", message=message, error=repr(exc) if exc else None, since_last=since)
        except Exception:  # logging itself failed (no descriptor, no import): say it without either
            with contextlib.suppress(Exception):
                os.write(2, b'{"event": "event_loop_error", "note": "logging failed"}\n')

    loop.set_exception_handler(handle)


def get_logger(name: str) -> Logger:
    """The logger `name` (structlog's, loaded on first use)."""
    return Logger(name)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Every line logged inside carries `values` (structlog's `bound_contextvars`)."""
    if _pending is None:  # structlog is (or is about to be) configured: its own context
        with _structlog().contextvars.bound_contextvars(**values):
            yield
        return
    token = _bound.set({**_bound.get(), **values})
    try:
        yield
    finally:
        _bound.reset(token)


def clear() -> None:
    """Forget every bound value (structlog's `clear_contextvars`)."""
    _bound.set(_EMPTY)
    if "structlog" in sys.modules:
        sys.modules["structlog"].contextvars.clear_contextvars()


def range_context(failure: Failure) -> AbstractContextManager[None]:
    """Every log line inside names the range: its id, stream, shard, start and end."""
    return bound(
        range_id=failure.range_id,
        stream_arn=failure.stream_arn,
        shard_id=failure.shard_id,
        start=failure.start_sequence,
        end=failure.end_sequence,
    )


def _merge_bound(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Values bound before structlog loaded, merged as structlog merges its own (after them: a key
    of the line, or bound since, wins)."""
    for key, value in _bound.get().items():
        event_dict.setdefault(key, value)
    return event_dict


class _StderrLogger:
    """Writes each line to whatever `sys.stderr` is at the time (it may be swapped)."""

    def __init__(self, *_: object) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_level = logging.WARNING  # the level `configure` was last asked for


def enabled(level: str) -> bool:
    """Whether lines at `level` are logged (e.g. whether to ask for what only they would show)."""
    return _METHOD_LEVELS.get(level, logging.CRITICAL) >= _level


def configure(level: str = "warning", *, json: bool = True) -> None:
    """Log at `level` and above to stderr, as JSON lines (or plain text for people)."""
    global _pending, _level
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    setup = _Setup(numeric, json)
    _level = numeric
    if "structlog" in sys.modules:
        _pending = None
        _apply(setup)
    else:
        _pending = setup
    # botocore and friends stay quiet unless asked: their debug lines carry signed URLs.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


def _apply(setup: _Setup) -> None:
    import structlog

    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if setup.json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _merge_bound,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(setup.level),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
