"""The settled messages' deletes and visibility changes, sent ten to a call.

A service settles messages one at a time, as their ranges finish; one DeleteMessage per
message costs a request each (a round trip, and about a millisecond of client CPU). `Batches`
gathers what many settling messages ask of one queue and sends it as DeleteMessageBatch and
ChangeMessageVisibilityBatch calls: a call goes out at once when nothing is in flight, and what
arrives while calls are in flight waits for the next (up to ten entries a call, a few calls at
once), so an idle queue waits for nothing and a busy one makes a tenth of the calls. Each
settling message still learns its own entry's fate: `delete` and `change_visibility` return once
its call is answered, and raise `EntryFailed` (that entry's error code) or the call's error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from replayer.aws import SqsQueue

__all__ = ["BATCH", "Batches", "EntryFailed"]

BATCH = 10  # SQS's most entries per batch call
CALLS_IN_FLIGHT = 4  # batch calls of one kind at once, per queue


class EntryFailed(Exception):
    """SQS answered this entry of a batch call with an error (its code is the message)."""


@dataclass(slots=True)
class _Entry:
    receipt: str
    seconds: int  # a visibility change's timeout (unused for a delete)
    done: asyncio.Future[None]


@dataclass
class _Sender:
    """One kind of batch call on one queue: the entries waiting, and the calls in flight."""

    delete: bool
    waiting: deque[_Entry] = field(default_factory=deque)
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)


class Batches:
    """The deletes and visibility changes of one queue's settled messages, batched (see module doc)."""

    def __init__(self, queue: SqsQueue, *, calls_in_flight: int = CALLS_IN_FLIGHT) -> None:
        self.queue = queue
        self.calls_in_flight = calls_in_flight
        self._deletes = _Sender(delete=True)
        self._visibility = _Sender(delete=False)

    async def delete(self, receipt: str) -> None:
        """Delete the message with `receipt` (in the next DeleteMessageBatch)."""
        await self._put(self._deletes, receipt, 0)

    async def change_visibility(self, receipt: str, seconds: int) -> None:
        """Make the message with `receipt` visible in `seconds` (in the next ChangeMessageVisibilityBatch,
        sent under the queue's visibility lock, as every visibility change is)."""
        await self._put(self._visibility, receipt, seconds)

    async def _put(self, sender: _Sender, receipt: str, seconds: int) -> None:
        entry = _Entry(receipt, seconds, asyncio.get_running_loop().create_future())
        sender.waiting.append(entry)
        self._start(sender)
        await entry.done

    def _start(self, sender: _Sender) -> None:
        """A new call when none is in flight, or while more entries wait than the calls in flight
        will take (a call that has returned is done at once: its done-callback may come later)."""
        while sender.waiting:
            running = sum(1 for task in sender.in_flight if not task.done())
            if running >= self.calls_in_flight or (running and len(sender.waiting) <= BATCH * running):
                return
            task = asyncio.create_task(self._send(sender), name="sqs-batch")
            sender.in_flight.add(task)
            task.add_done_callback(sender.in_flight.discard)

    async def _send(self, sender: _Sender) -> None:
        """Send the waiting entries, ten a call, until none wait; each entry's future gets its fate."""
        try:
            await asyncio.sleep(0)  # the messages settling in this turn of the loop go in the same call
            while sender.waiting:
                entries = [sender.waiting.popleft() for _ in range(min(BATCH, len(sender.waiting)))]
                await self._call(sender, entries)
        finally:  # cancelled (shutdown) and no other call to take them: nobody is left waiting
            me = asyncio.current_task()
            if not any(task is not me and not task.done() for task in sender.in_flight):
                while sender.waiting:
                    entry = sender.waiting.popleft()
                    if not entry.done.done():
                        entry.done.set_exception(EntryFailed("not sent"))

    async def _call(self, sender: _Sender, entries: list[_Entry]) -> None:
        receipts = [e.receipt for e in entries]
        try:
            if sender.delete:
                failed = await self.queue.delete_batch(receipts)
            else:
                async with self.queue.visibility_lock:
                    failed = await self.queue.change_visibility_batch(receipts, [e.seconds for e in entries])
        except BaseException as exc:
            for entry in entries:
                if not entry.done.done():
                    entry.done.set_exception(exc if isinstance(exc, Exception) else EntryFailed("not sent"))
            if not isinstance(exc, Exception):
                raise
            return
        codes = dict(failed)
        for i, entry in enumerate(entries):
            if entry.done.done():
                continue
            if i in codes:
                entry.done.set_exception(EntryFailed(codes[i]))
            else:
                entry.done.set_result(None)
