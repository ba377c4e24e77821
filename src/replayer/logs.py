"""structlog set-up: JSON lines on stderr, bound to the range being worked on.

Record contents are never logged; only ranges, counts and reasons.
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager
from typing import Any

import structlog

from replayer.model import Failure

__all__ = ["configure", "range_context"]


def range_context(failure: Failure) -> AbstractContextManager[Any]:
    """Every log line inside names the range: its id, stream, shard, start and end."""
    return structlog.contextvars.bound_contextvars(
        range_id=failure.range_id,
        stream_arn=failure.stream_arn,
        shard_id=failure.shard_id,
        start=failure.start_sequence,
        end=failure.end_sequence,
    )


class _StderrLogger:
    """Writes each line to whatever `sys.stderr` is at the time (it may be swapped)."""

    def __init__(self, *_: object) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure(level: str = "warning", *, json: bool = True) -> None:
    """Log at `level` and above to stderr, as JSON lines (or plain text for people)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
    # botocore and friends stay quiet unless asked: their debug lines carry signed URLs.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
