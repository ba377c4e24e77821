"""The breaker: when too many of the last invocations failed, no invocation starts.

`closed` lets every invocation through and counts the last `window` of them. When the failed
ones reach ``threshold x window`` it opens, keeping the reason and the function's last error.
What an open breaker does depends on who runs it:
- a command that ends (`redrive`, `replay`, `drain`): it stays open; every invocation about to
  start is refused (`BreakerOpen`), and the ones told through `on_trip` stop starting work;
- the service (`run`) and the Lambda: after `cooldown` seconds it lets one invocation through
  (`half-open`); success closes it, failure opens it again for another cool-down. Invocations
  waiting meanwhile wait (within their range's budget); the queue's messages are not spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from replayer import logs
from replayer.sinks._base import SinkError

__all__ = ["Breaker", "BreakerOpen", "CLOSED", "HALF_OPEN", "OPEN"]

log = logs.get_logger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class BreakerOpen(SinkError):
    """The breaker is open: this invocation was not started (the range is left for a rerun)."""


class Breaker:
    """Counts invocations' results; opens past `threshold` of the last `window` (None: never)."""

    def __init__(
        self,
        threshold: float | None = 0.5,
        window: int = 10,
        *,
        cooldown: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.window = max(1, window)
        self.cooldown = cooldown  # None: once open, stays open (a command that ends)
        self._clock = clock
        self._results: deque[bool] = deque(maxlen=self.window)  # True: failed
        self.state = CLOSED
        self.reason: str | None = None
        self.last_error: str | None = None
        self.trips = 0
        self._opened_at = 0.0
        self._probing = False
        self._changed = asyncio.Event()
        self.on_trip: list[Callable[[str], None]] = []

    @property
    def failed(self) -> int:
        return sum(self._results)

    async def admit(self) -> None:
        """Return when an invocation may start; raise BreakerOpen when it may not (a command that ends)."""
        while self.state != CLOSED:
            if self.cooldown is None:
                raise BreakerOpen(self.describe())
            if self.state == OPEN and not self._probing:
                left = self._opened_at + self.cooldown - self._clock()
                if left <= 0:
                    self.state, self._probing = HALF_OPEN, True
                    log.warning("breaker_half_open", reason=self.reason)
                    return  # this invocation is the probe
                await self._wait(left)
            else:
                await self._wait(None)  # the probe is out: its result decides

    async def _wait(self, seconds: float | None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    def record(self, failed: bool, error: str | None = None) -> None:
        """One invocation's result (a throttled invocation is not one: not recorded)."""
        if failed and error:
            self.last_error = error
        if self.state == HALF_OPEN:
            self._probing = False
            if failed:
                self._open(f"the trial invocation after a {self.cooldown:g} s pause failed too")
            else:
                self.state, self.reason = CLOSED, None
                self._results.clear()
                log.warning("breaker_closed")
            self._changed.set()
            return
        self._results.append(failed)
        threshold = self.threshold
        if self.state == CLOSED and threshold is not None and self.failed >= max(1, threshold * self.window):
            self._open(
                f"{self.failed} of the last {len(self._results)} invocations failed "
                f"(--stop-at-error-rate {threshold:g} of --error-window {self.window})"
            )

    def abandon(self) -> None:
        """An admitted invocation ended without a result (throttled, cancelled): a trial is tried again."""
        if self.state == HALF_OPEN and self._probing:
            self.state, self._probing = OPEN, False
            self._opened_at = self._clock() - (self.cooldown or 0.0)  # the next invocation is the trial
            self._changed.set()

    def _open(self, reason: str) -> None:
        self.state, self.reason = OPEN, reason
        self._opened_at = self._clock()
        self.trips += 1
        log.error("breaker_open", reason=reason, last_error=self.last_error)
        for tell in list(self.on_trip):
            tell(self.describe())

    def describe(self) -> str:
        """Why the breaker is open, with the function's last error: one line."""
        text = f"the breaker is open: {self.reason}"
        return text + (f"; the function's last error: {self.last_error}" if self.last_error else "")
