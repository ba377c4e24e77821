"""Settings of the service, the burst drain and the Lambda handler: flags first, then `REPLAYER_*`.

Everything is parsed here, from strings, so that every problem is found at start-up and
reported together, one clear line each, whether it came from a flag or the environment.
This module imports nothing heavy: the Lambda handler reads its settings at cold start.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from replayer.errors import ConfigError

__all__ = [
    "ENV",
    "Settings",
    "is_queue_url",
    "load_settings",
    "parse_duration",
    "queue_region",
    "quarantine_problem",
    "split_list",
]

T = TypeVar("T")

# Setting name -> environment variable. Flags are the same names, dashed: --grace-seconds.
ENV = {
    "queue": "REPLAYER_QUEUE",
    "to": "REPLAYER_TO",
    "allow_streams": "REPLAYER_ALLOW_STREAMS",
    "quarantine": "REPLAYER_QUARANTINE",
    "concurrency": "REPLAYER_CONCURRENCY",
    "prefetch": "REPLAYER_PREFETCH",
    "grace_seconds": "REPLAYER_GRACE_SECONDS",
    "http_port": "REPLAYER_HTTP_PORT",
    "http_host": "REPLAYER_HTTP_HOST",
    "visibility_timeout": "REPLAYER_VISIBILITY_TIMEOUT",
    "wait_seconds": "REPLAYER_WAIT_SECONDS",
    "retry_base_seconds": "REPLAYER_RETRY_BASE_SECONDS",
    "retry_max_seconds": "REPLAYER_RETRY_MAX_SECONDS",
    "safety_margin_seconds": "REPLAYER_SAFETY_MARGIN_SECONDS",
    "max_records_per_invoke": "REPLAYER_MAX_RECORDS_PER_INVOKE",
    "invoke_retries": "REPLAYER_INVOKE_RETRIES",
    "log_level": "REPLAYER_LOG_LEVEL",
    "expiry_warning": "REPLAYER_EXPIRY_WARNING",
}

_LOG_LEVELS = ("debug", "info", "warning", "error")
# https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, or an emulator's http://host:port/ACCOUNT/NAME.
_QUEUE_URL = re.compile(r"^https?://[^/\s]+/(?P<account>[^/\s]+)/(?P<name>[A-Za-z0-9_-]{1,80}(\.fifo)?)$")
_SQS_MAX_VISIBILITY = 43_200  # 12 hours, SQS's own limit
_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_EXPIRY_WARNING = 366 * 86400  # Kinesis keeps records at most 365 days


def parse_duration(text: str) -> float:
    """`7200`, `90s`, `30m`, `2h`, `1.5d` -> seconds. Raises ValueError for anything else."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 7200, 90m, 2h, 1d)")
    return float(m["number"]) * _UNIT_SECONDS[m["unit"]]


def split_list(value: str) -> list[str]:
    """`a,b c` -> ['a', 'b', 'c']: lists in one environment variable, split on commas and spaces."""
    return [part for part in re.split(r"[\s,]+", value) if part]


def is_queue_url(value: str) -> bool:
    return _QUEUE_URL.match(value) is not None


def queue_region(queue_url: str) -> str | None:
    """The region in an SQS queue URL's host (None for an emulator's: the environment's region)."""
    parts = queue_url.split("/")[2].split(".") if queue_url.count("/") >= 2 else []
    if len(parts) >= 3 and parts[0] == "sqs":
        return parts[1]  # sqs.REGION.amazonaws.com
    if len(parts) >= 3 and parts[1] == "queue":
        return parts[0]  # the legacy REGION.queue.amazonaws.com
    return None


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings. Build with `load_settings`, which reports every problem at once."""

    to: tuple[str, ...]
    queue: str | None = None
    allow_streams: tuple[str, ...] = ()
    quarantine: str | None = None
    concurrency: int = 8
    prefetch: int = 10  # messages held (invisible, heartbeated) beyond those in flight
    grace_seconds: float = 30.0
    http_port: int | None = None
    http_host: str = "0.0.0.0"  # a container's health checks come from outside its namespace
    visibility_timeout: int = 60
    wait_seconds: int = 20
    retry_base_seconds: int = 30
    retry_max_seconds: int = 900
    safety_margin_seconds: float = 10.0  # Lambda: no new range starts with less time than this left
    max_records_per_invoke: int | None = None  # lambda: sinks; None: the range's batchSize, else 100
    invoke_retries: int = 3  # lambda: sinks
    log_level: str = "warning"
    expiry_warning: float = 7200.0  # seconds: ranges this close to their expiry deadline are warned about
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def heartbeat_seconds(self) -> float:
        """How often held messages get their visibility extended: well before it lapses."""
        return max(0.2, self.visibility_timeout / 3)


class _Reader:
    """Reads each setting from its flag or its environment variable, collecting problems."""

    def __init__(self, flags: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.flags = flags
        self.env = env
        self.problems: list[str] = []

    def source(self, name: str) -> str:
        if self.flags.get(name) not in (None, [], ()):
            return "--" + name.replace("_", "-")
        return ENV[name]

    def raw(self, name: str) -> Any:
        value = self.flags.get(name)
        if value not in (None, [], ()):
            return value
        text = self.env.get(ENV[name], "").strip()
        return text or None

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else str(value).strip()

    def items(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        parts = [value] if isinstance(value, str) else list(value)
        return tuple(item for part in parts for item in split_list(str(part)))

    def duration(self, name: str, default: float, high: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            seconds = parse_duration(str(value))
        except ValueError as exc:
            self.problems.append(f"{self.source(name)}: {exc}")
            return default
        if seconds > high:
            self.problems.append(f"{self.source(name)}: {value} is out of range (at most {high:g} seconds)")
            return default
        return seconds

    def number(self, name: str, default: T, cast: Callable[[str], T], low: float, high: float) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = cast(str(value).strip())
        except ValueError:
            kind = "a whole number" if cast is int else "a number"
            self.problems.append(f"{self.source(name)}: {str(value)!r} is not {kind}")
            return default
        as_float = float(number)  # type: ignore[arg-type]
        if not (math.isfinite(as_float) and low <= as_float <= high):
            self.problems.append(f"{self.source(name)}: {value} is out of range ({low:g} to {high:g})")
            return default
        return number


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    need_queue: bool,
    http_port_default: int | None = None,
    wait_seconds_default: int = 20,
    sink_check: Callable[[str], str | None] | None = None,
    durable_check: Callable[[Sequence[str]], bool] | None = None,
) -> Settings:
    """Settings from `flags` (None or empty: unset) over `env` (default: os.environ).

    Raises ConfigError listing every problem, one a line. `sink_check(uri)` returns a
    problem with a `--to` URI or None; `durable_check(uris)` says whether any sink keeps
    loss reports (without one, a warning is recorded in `Settings.warnings`).
    """
    r = _Reader(flags or {}, os.environ if env is None else env)
    queue = r.text("queue")
    if need_queue and queue is None:
        r.problems.append(f"--queue (or {ENV['queue']}) is required: the SQS queue URL to consume")
    elif queue is not None and not is_queue_url(queue):
        r.problems.append(
            f"{r.source('queue')}: {queue!r} is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
        )
    to = r.items("to")
    if not to:
        r.problems.append(
            f"--to (or {ENV['to']}) is required: s3://BUCKET[/PREFIX], file:DIR, lambda:FUNCTION or -"
        )
    for uri in to:
        problem = sink_check(uri) if sink_check else None
        if problem:
            r.problems.append(f"{r.source('to')}: {problem}")
    quarantine = r.text("quarantine")
    if quarantine is not None:
        problem = quarantine_problem(quarantine)
        if problem:
            r.problems.append(f"{r.source('quarantine')}: {problem}")
    port_text = r.text("http_port")
    http_port = http_port_default
    if port_text is not None and port_text.lower() in ("off", "none", "no", "false"):
        http_port = None
    elif port_text is not None:
        http_port = r.number("http_port", http_port_default, int, 0, 65535)
    settings = Settings(
        to=to,
        queue=queue,
        allow_streams=r.items("allow_streams"),
        quarantine=quarantine,
        concurrency=r.number("concurrency", 8, int, 1, 256),
        prefetch=r.number("prefetch", 10, int, 0, 1000),
        grace_seconds=r.number("grace_seconds", 30.0, float, 0, 3600),
        http_port=http_port,
        http_host=r.text("http_host", "0.0.0.0") or "0.0.0.0",
        visibility_timeout=r.number("visibility_timeout", 60, int, 1, _SQS_MAX_VISIBILITY),
        wait_seconds=r.number("wait_seconds", wait_seconds_default, int, 0, 20),
        retry_base_seconds=r.number("retry_base_seconds", 30, int, 0, _SQS_MAX_VISIBILITY),
        retry_max_seconds=r.number("retry_max_seconds", 900, int, 0, _SQS_MAX_VISIBILITY),
        safety_margin_seconds=r.number("safety_margin_seconds", 10.0, float, 0, 900),
        max_records_per_invoke=r.number("max_records_per_invoke", None, int, 1, 10_000),
        invoke_retries=r.number("invoke_retries", 3, int, 0, 100),
        log_level=(r.text("log_level", "warning") or "warning").lower(),
        expiry_warning=r.duration("expiry_warning", 7200.0, _MAX_EXPIRY_WARNING),
    )
    if settings.log_level not in _LOG_LEVELS:
        r.problems.append(
            f"{r.source('log_level')}: {settings.log_level!r} is not one of {', '.join(_LOG_LEVELS)}"
        )
    if settings.retry_base_seconds > settings.retry_max_seconds:
        r.problems.append(
            f"retry delays: base {settings.retry_base_seconds}s is more than max {settings.retry_max_seconds}s"
        )
    if r.problems:
        count = len(r.problems)
        raise ConfigError(
            f"{count} configuration problem{'s' if count > 1 else ''}:\n"
            + "\n".join(f"  - {p}" for p in r.problems)
        )
    warnings: list[str] = []
    if durable_check is not None and not durable_check(to):
        warnings.append(
            "no --to sink keeps loss reports (only - or lambda:): ranges with lost records "
            "will never be deleted from the queue; add s3://BUCKET[/PREFIX] or file:DIR"
        )
    if not settings.allow_streams:
        warnings.append(
            "no --allow-stream given: any stream named by a message will be read (IAM should still limit it)"
        )
    return Settings(**{**_fields(settings), "warnings": tuple(warnings)})


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.__dataclass_fields__}


def quarantine_problem(uri: str) -> str | None:
    """What is wrong with a `--quarantine` value, or None: s3://BUCKET[/PREFIX] or an SQS queue URL."""
    if uri.startswith("s3://"):
        bucket = uri[len("s3://") :].partition("/")[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            return f"{uri!r}: not a bucket name; expected s3://BUCKET[/PREFIX]"
        return None
    if is_queue_url(uri):
        return None
    return f"{uri!r}: expected s3://BUCKET[/PREFIX] or an SQS queue URL"
