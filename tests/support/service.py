"""The SQS service (`replayer run`/`drain`) in-process: its settings, metrics and polling."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from replayer.config import Settings
from replayer.observe import Recorder
from tests.support import ROOT


def settings(queue: str, to: str, **kw: Any) -> Settings:
    """Service settings for a test: one sink, short waits, long retry delays (override with kw)."""
    base: dict[str, Any] = {
        "to": (to,),
        "queue": queue,
        "wait_seconds": 1,
        "visibility_timeout": 30,
        "retry_base_seconds": 30,
        "grace_seconds": 10,
        "allow_streams": ("*",),  # deny by default: a test names what it refuses
    }
    return Settings(**(base | kw))


async def wait_for(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll until `check()`; a bound on waiting, not an assertion about speed."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def sample(metrics: Recorder, name: str, labels: dict[str, str] | None = None) -> float:
    """One Prometheus sample of the service's registry (0 when never counted)."""
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def arrival(hours_ago: float) -> str:
    """An invocation record's arrival time, `hours_ago` hours before now."""
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def start_replayer(
    endpoint: str, *args: str, log: Path, max_open_files: int | None = None
) -> subprocess.Popen[bytes]:
    """`python -m replayer ARGS` as its own process, configured only by ARGS (no REPLAYER_* from the
    test's environment) and pointed at `endpoint`; its JSON logs go to `log`. `max_open_files`: its
    RLIMIT_NOFILE (the descriptors it may hold)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYER_")}
    env["AWS_ENDPOINT_URL"] = endpoint

    def limit() -> None:
        if max_open_files is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))

    return subprocess.Popen(
        [sys.executable, "-m", "replayer", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        preexec_fn=limit if max_open_files is not None else None,
    )
