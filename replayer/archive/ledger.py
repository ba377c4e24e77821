"""The run ledger: what each named re-drive did, kept in the archive beside what it re-drove.

A run named NAME lives under ``runs/NAME/``, every object written create-only (like the
archive's own), so two processes can never overwrite each other's account:
- ``run.json``: who started it (the caller's identity ARN), when, the command and its options;
- ``events/NNNNNN.json``: numbered events, each written once (a writer that finds its number
  taken takes the next): ``state`` (running, completed, stopped, cancelled, failed; with the
  reason and the function's last error) and ``range`` (per range: records sent, stale,
  superseded, failed, the function versions that ran);
- ``cancel-NNNN.json``: a request to stop attempt NNNN, written by ``replayer runs cancel``; the
  run polls for it (a later rerun of the name is a new attempt, not cancelled by it).

A rerun of the same name appends to the same events (a new ``running`` state, attempt n+1):
the run's state is its last state event; a range's figures are its last range event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from replayer.archive.store import Store, StoreError

__all__ = [
    "RUNS",
    "STATES",
    "Ledger",
    "RunRecord",
    "run_names",
    "valid_name",
]

RUNS = "runs"
STATES = ("running", "completed", "stopped", "cancelled", "failed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EVENT = re.compile(r"^[0-9]{6}\.json$")
_MAX_EVENTS = 999_999
_TOTALS = ("sent", "stale", "superseded", "failed")


def valid_name(name: str) -> bool:
    return _NAME.match(name) is not None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the ledger tells it: its header, its events in order, a cancel request if any."""

    name: str
    header: Mapping[str, Any]
    events: Sequence[Mapping[str, Any]]
    cancel: Mapping[str, Any] | None = None

    def _states(self) -> list[Mapping[str, Any]]:
        return [e for e in self.events if e.get("event") == "state"]

    @property
    def state(self) -> str:
        states = self._states()
        return str(states[-1].get("state", "running")) if states else "running"

    @property
    def last_state(self) -> Mapping[str, Any]:
        states = self._states()
        return states[-1] if states else {}

    @property
    def attempts(self) -> int:
        return sum(1 for e in self._states() if e.get("state") == "running")

    @property
    def ranges(self) -> dict[str, Mapping[str, Any]]:
        """Each range's last account, by range id, in the order first seen."""
        found: dict[str, Mapping[str, Any]] = {}
        for e in self.events:
            if e.get("event") == "range" and isinstance(e.get("range_id"), str):
                found[e["range_id"]] = e
        return found

    @property
    def totals(self) -> dict[str, int]:
        ranges = self.ranges.values()
        totals = {k: sum(int(r.get(k, 0) or 0) for r in ranges) for k in _TOTALS}
        return {"ranges": len(self.ranges), **totals}

    @property
    def updated(self) -> str | None:
        times = [str(e["at"]) for e in self.events if e.get("at")]
        return times[-1] if times else self.header.get("started")

    def describe(self) -> dict[str, Any]:
        last = self.last_state
        return {
            "name": self.name,
            "state": self.state,
            "reason": last.get("reason"),
            "last_error": last.get("last_error"),
            "started": self.header.get("started"),
            "updated": self.updated,
            "by": self.header.get("by"),
            "command": self.header.get("command"),
            "options": self.header.get("options", {}),
            "attempts": self.attempts,
            "cancel_requested": dict(self.cancel) if self.cancel else None,
            "totals": self.totals,
            "ranges": [dict(r) for r in self.ranges.values()],
            "events": [dict(e) for e in self.events],
        }


class Ledger:
    """The ledger of one named run in an archive; every write create-only."""

    def __init__(self, store: Store, name: str) -> None:
        if not valid_name(name):
            raise ValueError(f"{name!r} is not a run name (letters, digits, '.', '_', '-'; at most 64)")
        self.store = store
        self.name = name
        self.folder = f"{RUNS}/{name}"
        self._next: int | None = None

    @property
    def uri(self) -> str:
        return self.store.location(self.folder)

    async def start(self, header: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Create the run (its header); the existing header when the name was run before (a resume)."""
        if await self.store.create(f"{self.folder}/run.json", _json({"name": self.name, **header})):
            return None
        existing = await self.store.read(f"{self.folder}/run.json")
        return _document(existing) if existing is not None else {}

    async def append(self, event: Mapping[str, Any]) -> str:
        """Write one event under the next free number; its key."""
        if self._next is None:
            self._next = await self._count()
        body = _json({"at": now(), **event})
        while self._next <= _MAX_EVENTS:
            key = f"{self.folder}/events/{self._next:06d}.json"
            self._next += 1
            if await self.store.create(key, body):
                return key
        raise StoreError(f"{self.uri}: the ledger is full ({_MAX_EVENTS} events)")

    async def _count(self) -> int:
        numbers = [int(k.rpartition("/")[2][:6]) for k in await self._event_keys()]
        return max(numbers, default=-1) + 1

    async def _event_keys(self) -> list[str]:
        keys = await self.store.keys(f"{self.folder}/events")
        return sorted(k for k in keys if _EVENT.match(k.rpartition("/")[2]))

    async def request_cancel(self, by: str | None) -> bool:
        """Ask the run's current attempt to stop (create-only); False when it was already asked."""
        record = await self.read()
        attempt = record.attempts if record else 0
        body = _json({"at": now(), "by": by, "attempt": attempt})
        return await self.store.create(f"{self.folder}/{_cancel_name(attempt)}", body)

    async def cancel_requested(self, attempt: int) -> Mapping[str, Any] | None:
        """The cancel request made during `attempt`, or None."""
        body = await self.store.read(f"{self.folder}/{_cancel_name(attempt)}")
        return None if body is None else _document(body)

    async def read(self) -> RunRecord | None:
        """The run as written so far, or None when there is no run of that name."""
        header = await self.store.read(f"{self.folder}/run.json")
        if header is None:
            return None
        events = []
        for key in await self._event_keys():
            body = await self.store.read(key)
            if body is not None:
                events.append(_document(body))
        record = RunRecord(self.name, _document(header), events)
        cancel = await self.cancel_requested(record.attempts)
        return RunRecord(self.name, record.header, events, cancel)


def _cancel_name(attempt: int) -> str:
    return f"cancel-{attempt:04d}.json"


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return {"unreadable": True}
    return document if isinstance(document, dict) else {"unreadable": True}


async def run_names(store: Store) -> list[str]:
    """The names of the runs in an archive (those with a header), sorted."""
    names = set()
    for key in await store.keys(RUNS):
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == RUNS and parts[2] == "run.json" and valid_name(parts[1]):
            names.add(parts[1])
    return sorted(names)
