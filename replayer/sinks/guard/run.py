"""A named run on the record: its ledger (`replayer.archive.ledger`) kept while the run goes on.

`RecordedRun` opens (or resumes) the run's ledger, writes ``running`` with who and what,
one ``range`` event per range worked on (with the `Guard`'s tally: sent, stale, superseded,
failed, the function versions that ran), and the final state. While the run goes on it polls
for a cancel request (``replayer runs cancel``), which stops the `Guard`: no invocation
starts, those in flight finish, and the run ends ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from replayer import logs
from replayer.archive.ledger import Ledger
from replayer.archive.store import Store, StoreError
from replayer.aws import Clients
from replayer.model import Outcome, OutcomeKind
from replayer.sinks.guard import Guard

__all__ = ["RecordedRun", "caller_arn", "generated_name"]

log = logs.get_logger(__name__)

CANCEL_POLL = 1.0  # seconds between looks for a cancel request
_REASON = 300  # characters of a range's reason kept in the ledger


def generated_name(command: str = "redrive") -> str:
    """``redrive-20260101-120000-ab12``: sortable by start time, unique enough to never collide."""
    return f"{command}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


async def caller_arn(clients: Clients) -> str | None:
    """The caller's identity ARN (STS GetCallerIdentity), or None when it cannot be had."""
    try:
        sts = await clients.get("sts")
        answer = await sts.get_caller_identity()
    except Exception as exc:  # who ran it is worth recording, never worth failing the run for
        log.info("caller_identity_unknown", error=str(exc))
        return None
    arn = answer.get("Arn")
    return arn if isinstance(arn, str) else None


class RecordedRun:
    """The ledger of one run, written as it goes; stop the guard when the run is cancelled."""

    def __init__(
        self,
        store: Store,
        name: str,
        guard: Guard,
        clients: Clients,
        *,
        command: str,
        options: Mapping[str, Any],
        poll: float = CANCEL_POLL,
    ) -> None:
        self.ledger = Ledger(store, name)
        self.name = name
        self.guard = guard
        self.clients = clients
        self.command = command
        self.options = dict(options)
        self.poll = poll
        self.by: str | None = None
        self.attempt = 1
        self.resumed = False
        self.cancelled: Mapping[str, Any] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    async def start(self, ranges: int) -> None:
        """Open the ledger (or resume it) and write ``running``; start looking for a cancel request."""
        self.by = await caller_arn(self.clients)
        header = {
            "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "by": self.by,
            "command": self.command,
            "options": self.options,
        }
        existing = await self.ledger.start(header)
        if existing is not None:
            self.resumed = True
            record = await self.ledger.read()
            self.attempt = (record.attempts if record else 0) + 1
        await self.ledger.append({
            "event": "state", "state": "running", "attempt": self.attempt, "by": self.by,
            "host": socket.gethostname(), "pid": os.getpid(), "ranges_selected": ranges,
            "options": self.options,
        })  # fmt: skip
        self._poller = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                request = await self.ledger.cancel_requested(self.attempt)
            except StoreError as exc:
                log.warning("cancel_check_failed", run=self.name, error=str(exc))
                continue
            if request is not None:
                self.cancelled = request
                by = request.get("by") or "someone"
                self.guard.stop(f"cancelled by {by} at {request.get('at')}")
                return

    def record(self, outcome: Outcome | None) -> None:
        """One range's account (from the scheduler's on_done: written in the background)."""
        if outcome is None or outcome.failure is None or outcome.kind is OutcomeKind.SKIPPED:
            return
        failure = outcome.failure
        tally = self.guard.tallies.pop(failure.range_id, None)
        figures: dict[str, Any] = tally.describe() if tally else {"sent": 0, "stale": 0, "superseded": 0}
        if tally is None:
            figures["failed"] = 0 if outcome.kind is OutcomeKind.REPLAYED else outcome.recovered
        event = {
            "event": "range", "attempt": self.attempt, "range_id": failure.range_id,
            "stream_arn": failure.stream_arn, "shard_id": failure.shard_id,
            "start": failure.start_sequence, "end": failure.end_sequence,
            "outcome": outcome.kind.value, "reason": outcome.reason[:_REASON], **figures,
        }  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._append(event))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _append(self, event: Mapping[str, Any]) -> None:
        try:
            await self.ledger.append(event)
        except StoreError as exc:  # the run goes on; its ledger is short of one range, said in the log
            log.error("ledger_write_failed", run=self.name, error=str(exc))

    async def finish(
        self, state: str, *, reason: str | None = None, outcomes: Sequence[Outcome] = ()
    ) -> None:
        """Wait for the range events, then write the final state."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._writes:
            await asyncio.gather(*self._writes)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.kind.value] = counts.get(o.kind.value, 0) + 1
        await self._append({
            "event": "state", "state": state, "attempt": self.attempt, "reason": reason,
            "last_error": self.guard.breaker.last_error, "outcomes": counts, "guard": self.guard.status(),
        })  # fmt: skip
