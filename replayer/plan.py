"""Dry runs: what each range would send, read from the stream but written nowhere.

For every range: its event source mapping, the records the stream still holds (total,
first and last sequence), and what `lambda:` sinks would receive after the mapping's
filter and the selection (matched, first and last). Nothing is written, nothing invoked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from replayer import mappings
from replayer.archive.manifest import ArchivedRange
from replayer.archive.read import Damaged, read_records
from replayer.archive.store import Store, StoreError
from replayer.aws import Clients
from replayer.filtering import PatternError
from replayer.model import Failure, Outcome, OutcomeKind, StreamRecord
from replayer.readers import Readers
from replayer.selection import Selection, to_send

__all__ = ["ArchivedSend", "RangePlan", "archived_sends", "plan_ranges"]


@dataclass(frozen=True, slots=True)
class RangePlan:
    """One range as a dry run sees it."""

    failure: Failure
    read: tuple[StreamRecord, ...]
    sent: tuple[StreamRecord, ...]  # what lambda: sinks would receive
    missing: int = 0  # spans the stream no longer holds
    problem: str = ""

    def outcome(self, to: Sequence[str]) -> Outcome:
        where = ", ".join(to) or "(no --to given)"
        if self.problem:  # the range (its stream, shard, sequence numbers) is described beside the reason
            return Outcome(OutcomeKind.PLANNED, self.failure, reason=self.problem)
        reason = (
            f"would read {len(self.read)} records"
            + (f" ({self.missing} spans gone)" if self.missing else "")
            + f", send {len(self.sent)} of {len(self.read)} {_span(self.sent)} to {where}"
            + f"; {mappings.summary(self.failure.mapping)}"
        )
        return Outcome(OutcomeKind.PLANNED, self.failure, recovered=len(self.sent), reason=reason)


def _span(records: Sequence[StreamRecord]) -> str:
    return f"({records[0].sequence_number}..{records[-1].sequence_number})" if records else "(none)"


@dataclass(frozen=True, slots=True)
class ArchivedSend:
    """What a redrive's dry run finds of one archived range: a phrase for its reason, the records a
    `lambda:` sink would be sent, and why the folder is damaged (a real run rejects it) if it is."""

    phrase: str
    sent: tuple[StreamRecord, ...] = ()
    damaged: str | None = None


async def archived_sends(
    store: Store, ranges: Sequence[ArchivedRange], *, selection: Selection | None, no_filter: bool
) -> dict[str, ArchivedSend]:
    """For a redrive's dry run: per range_id, what would be sent of the archived records, read back
    and checked against their manifest exactly as a real run reads them."""
    sends = {}
    for archived in ranges:
        try:
            records = await read_records(store, archived)
        except Damaged as exc:
            sends[archived.failure.range_id] = ArchivedSend(str(exc), damaged=str(exc))
            continue
        except StoreError as exc:
            sends[archived.failure.range_id] = ArchivedSend(f"cannot tell what would be sent: {exc}")
            continue
        try:
            sent = to_send(archived.failure, records, selection=selection, apply_filter=not no_filter)
        except ValueError as exc:  # a filter we cannot apply
            sends[archived.failure.range_id] = ArchivedSend(f"cannot tell what would be sent: {exc}")
            continue
        sends[archived.failure.range_id] = ArchivedSend(
            f"would send {len(sent)} of {len(records)} {_span(sent)}; {mappings.summary(archived.failure.mapping)}",
            tuple(sent),
        )
    return sends


async def plan_ranges(
    clients: Clients,
    failures: Sequence[Failure],
    *,
    readers: Readers | None = None,
    selection: Selection | None = None,
    no_filter: bool = False,
) -> list[RangePlan]:
    """Read each range and work out what would be sent; one plan per failure, in order."""
    readers = readers or Readers(clients)
    found = await mappings.with_mappings(mappings.MappingFinder(clients), failures)
    plans = []
    for failure in found:
        try:
            result = await readers.for_failure(failure).read(failure)
        except Exception as exc:  # a plan reports the trouble and goes on
            plans.append(RangePlan(failure, (), (), problem=f"reading failed: {exc}"))
            continue
        if result.refused is not None:  # a run rejects it (e.g. no such stream): nothing sent, nothing lost
            plans.append(RangePlan(failure, (), (), problem=f"would be rejected: {result.refused}"))
            continue
        records = tuple(sorted(result.records, key=lambda r: r.sequence))
        try:
            sent = to_send(failure, records, selection=selection, apply_filter=not no_filter)
        except PatternError as exc:
            plans.append(
                RangePlan(failure, records, (), problem=f"the mapping's filter cannot be applied: {exc}")
            )
            continue
        plans.append(RangePlan(failure, records, tuple(sent), missing=len(result.gaps)))
    return plans
