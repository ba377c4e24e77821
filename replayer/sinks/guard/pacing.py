"""Pacing of invocations: a rate (records per second, with a ramp), invocations at once, throttling.

`Pacer.take(n)` reserves `n` records' worth of the rate (virtual scheduling: each reservation
starts when the previous one's share of time has passed), so over any stretch of time the
process sends at most ``rate x seconds`` records, plus one batch. With a ramp the rate starts
at a tenth and rises linearly to the full rate. Throttling (`throttled`) holds every
invocation back for a growing pause and halves the rate; each invocation that goes through
gives a tenth of it back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["Pacer", "THROTTLE_WAIT", "THROTTLE_WAIT_MAX"]

THROTTLE_WAIT = 0.5  # seconds: the first pause after a throttle; doubles while throttling goes on
THROTTLE_WAIT_MAX = 20.0
_SLOWEST = 1 / 32  # throttling slows the rate down to this fraction of it at most


class Pacer:
    """One per process: every invocation of every lambda: sink takes its records from here."""

    def __init__(
        self,
        rate: float | None = None,
        *,
        ramp: float = 0.0,
        max_inflight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a rate must be positive")
        self.rate = rate
        self.ramp = max(0.0, ramp)
        self.max_inflight = max_inflight
        self._clock = clock
        self._slots = asyncio.Semaphore(max_inflight) if max_inflight else None
        self._started: float | None = None
        self._next = 0.0  # when the next reservation may start
        self._hold_until = 0.0  # throttled: nothing starts before this
        self._slow = 1.0  # throttling's share of the rate
        self._throttles = 0  # in a row
        self.in_flight = 0
        self._sent: list[tuple[float, int]] = []  # (when, records) of the last few seconds, for `current`

    def allowed(self, now: float | None = None) -> float | None:
        """The rate in force now (records per second), or None when unpaced."""
        if self.rate is None:
            return None
        now = self._clock() if now is None else now
        share = 1.0
        if self.ramp > 0:
            elapsed = 0.0 if self._started is None else now - self._started
            share = min(1.0, 0.1 + 0.9 * elapsed / self.ramp)
        return self.rate * share * self._slow

    async def take(self, records: int) -> None:
        """Wait until `records` more records may go, under the rate and any throttling pause."""
        now = self._clock()
        if self._started is None:
            self._started = now
        start = max(now, self._hold_until)
        if self.rate is not None:
            start = max(start, self._next)
            self._next = start + self._share(start, max(1, records))
        if start > now:
            await asyncio.sleep(start - now)

    def _share(self, start: float, records: int) -> float:
        """Seconds `records` take at the rate from `start` (on a ramp: at the rate half-way through)."""
        rate = self.allowed(start) or 1.0
        seconds = records / rate
        if self.ramp > 0:
            for _ in range(2):  # the ramp rises while they go: the rate at their middle
                seconds = records / (self.allowed(start + seconds / 2) or rate)
        return seconds

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One invocation in flight, within --max-inflight."""
        if self._slots is not None:
            await self._slots.acquire()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self._slots is not None:
                self._slots.release()

    def went(self, records: int) -> None:
        """An invocation went through: throttling eases off."""
        now = self._clock()
        self._sent.append((now, records))
        self._throttles = 0
        self._slow = min(1.0, self._slow + 0.1)

    def throttled(self) -> float:
        """The function was throttled: hold every invocation back and slow down; the pause (seconds)."""
        self._throttles += 1
        self._slow = max(_SLOWEST, self._slow / 2)
        pause: float = min(THROTTLE_WAIT_MAX, THROTTLE_WAIT * 2.0 ** (self._throttles - 1))
        pause += random.uniform(0, THROTTLE_WAIT)
        self._hold_until = max(self._hold_until, self._clock() + pause)
        return pause

    def current(self, window: float = 5.0) -> float:
        """Records per second sent over the last `window` seconds (for the progress line and metrics)."""
        now = self._clock()
        self._sent = [(t, n) for t, n in self._sent if now - t <= window]
        return sum(n for _, n in self._sent) / window
