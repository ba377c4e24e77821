"""`replayer audit`: what Lambda says it sent to the on-failure destination, against the archive.

Per event source mapping, over a window (`--since`, default the last 24 hours, to now):

- Lambda's own counts (CloudWatch `AWS/Lambda`, dimension `EventSourceMappingUUID`, else
  `FunctionName` + `EventSourceMappingUUID`, else `FunctionName` alone: all of the function's
  mappings, and the only series when the range's mapping was not found; Sum): `OnFailureDestinationDeliveredEventCount`
  (records sent to the on-failure destination) and `DroppedEventCount` (records dropped with no
  destination). They exist only where the mapping's metrics are enabled (`MetricsConfig:
  {Metrics: [EventCount]}`); without them the row says so.
- What the archive holds for the mapping's failure ranges whose invocation record is in the
  window: records archived and records reported lost (a range counts its `batchSize` when the
  invocation record gave it, else what was archived plus what was lost); at-risk windows are
  shown apart, they answer no failure record.

The difference (sent - archived - lost) names where to look: the failure queue, its dead-letter
queue, the quarantine (`--queue`, `--quarantine` add their counts), or the mapping's metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from replayer.allow import AllowList
from replayer.archive import ArchivedRange, Store
from replayer.archive.read import find_ranges
from replayer.aws import Clients, error_code
from replayer.model import records_lost
from replayer.watch import find_mappings

__all__ = ["DEFAULT_WINDOW", "MappingAudit", "audit", "lambda_counts"]

DEFAULT_WINDOW = timedelta(hours=24)
DELIVERED = "OnFailureDestinationDeliveredEventCount"
DROPPED = "DroppedEventCount"
_FUNCTION = "function:"


@dataclass
class MappingAudit:
    """One mapping's row: Lambda's counts, the archive's, the difference and where to look."""

    uuid: str | None
    function: str | None
    region: str | None
    streams: set[str] = field(default_factory=set)
    delivered: float | None = None  # None: no datapoint (metrics not enabled, or nothing sent)
    dropped: float | None = None
    metrics_note: str = ""
    ranges: int = 0
    archived: int = 0
    lost: int = 0
    at_risk_ranges: int = 0
    at_risk_records: int = 0
    lost_but_rescued: int = 0  # lost records of failure ranges that at-risk windows hold
    range_ids: list[str] = field(default_factory=list)
    latest: tuple[datetime, str] | None = None  # the latest failure range: when, its id (for `why`)

    @property
    def difference(self) -> int | None:
        """Records Lambda sent that the archive does not account for (negative: it holds more)."""
        if self.delivered is None:
            return None
        return int(self.delivered) - self.archived - self.lost

    def where(self, places: Mapping[str, str]) -> str:
        """What the difference means and where to look (`places`: the queue, DLQ, quarantine lines)."""
        notes = []
        diff = self.difference
        if self.delivered is None:
            notes.append(
                self.metrics_note
                or "no OnFailureDestinationDeliveredEventCount in the window: if the mapping sent failures, "
                "enable its metrics (MetricsConfig: EventCount)"
            )
        elif diff and diff > 0:
            where = "; ".join(f"{name}: {line}" for name, line in places.items()) or (
                "the failure queue, its dead-letter queue and the quarantine (give --queue, --quarantine)"
            )
            notes.append(f"{diff} records sent on failure are not in the archive: look in {where}")
        elif diff and diff < 0:
            notes.append(
                f"the archive holds {-diff} more records than Lambda reported sending: ranges sent twice, "
                "bisected batches, or ranges read back whole past the mapping's filter"
            )
        if self.lost_but_rescued:
            notes.append(
                f"{self.lost_but_rescued} of the records reported lost are in at-risk windows: "
                "the watch archived them before they expired"
            )
        if self.dropped:
            notes.append(
                f"Lambda dropped {int(self.dropped)} records with no destination: they are gone unless an "
                "at-risk rescue archived them"
            )
        said = "; ".join(notes) or "matches"
        if self.latest is not None:
            said += f"; replayer why {self.latest[1][:12]} shows why its latest range failed"
        return said

    def describe(self, places: Mapping[str, str]) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "function": self.function,
            "streams": sorted(self.streams),
            "lambda_delivered": self.delivered,
            "lambda_dropped": self.dropped,
            "ranges": self.ranges,
            "archived": self.archived,
            "lost": self.lost,
            "at_risk_ranges": self.at_risk_ranges,
            "at_risk_records": self.at_risk_records,
            "lost_but_rescued": self.lost_but_rescued,
            "difference": self.difference,
            "where": self.where(places),
            "range_ids": self.range_ids,
            "latest_range_id": self.latest[1] if self.latest else None,
        }


def _when(archived: ArchivedRange) -> datetime | None:
    failure = archived.failure
    return failure.timestamp or failure.first_arrival


def _key(archived: ArchivedRange) -> tuple[str | None, str | None]:
    failure = archived.failure
    uuid = (
        failure.mapping.uuid if failure.mapping is not None and failure.mapping.uuid else failure.mapping_uuid
    )
    function = failure.source_arn if failure.source_arn and _FUNCTION in failure.source_arn else None
    if function is None and failure.mapping is not None and failure.mapping.arn:
        function = failure.mapping.arn
    return (uuid.lower() if uuid else None), function


def tally(
    ranges: Iterable[ArchivedRange], since: datetime, until: datetime, rows: dict[str, MappingAudit]
) -> None:
    """Add the archive's ranges in the window to the rows (by mapping UUID, else by function)."""
    ranges = list(ranges)
    windows: dict[tuple[str, str], list[tuple[int, int]]] = {}  # at-risk windows of each shard, any time
    for archived in ranges:
        if archived.failure.at_risk:
            shard = (archived.failure.stream_arn, archived.failure.shard_id)
            windows.setdefault(shard, []).append((archived.failure.start, archived.failure.end))
    for archived in ranges:
        when = _when(archived)
        if when is None or not since <= when <= until:
            continue
        uuid, function = _key(archived)
        key = uuid or f"function:{function}"
        row = rows.get(key)
        if row is None:
            row = rows[key] = MappingAudit(uuid, function, archived.failure.region)
        row.function = row.function or function
        row.streams.add(archived.failure.stream_arn)
        if archived.failure.at_risk:
            row.at_risk_ranges += 1
            row.at_risk_records += archived.count
            continue
        lost, _ = records_lost(archived.failure, archived.count, archived.gaps)
        batch = archived.failure.batch_size
        row.ranges += 1
        row.archived += archived.count if batch is None else min(archived.count, batch - lost)
        row.lost += lost
        row.range_ids.append(archived.failure.range_id)
        if row.latest is None or when > row.latest[0]:
            row.latest = (when, archived.failure.range_id)
        kept = windows.get((archived.failure.stream_arn, archived.failure.shard_id), [])
        if lost and all(any(a <= int(g.first) and int(g.last) <= b for a, b in kept) for g in archived.gaps):
            row.lost_but_rescued += lost


def _function_name(function: str | None) -> str | None:
    return function.split(":")[6] if function and function.count(":") >= 6 else function


def _dimension_sets(row: MappingAudit) -> list[list[dict[str, str]]]:
    """The series that can stand for the row's mapping, the most specific first; the function's own
    (all its mappings together) last, and alone when the mapping is unknown."""
    function = _function_name(row.function)
    sets = []
    if row.uuid:
        sets.append([{"Name": "EventSourceMappingUUID", "Value": row.uuid}])
        if function:
            sets.append(
                [
                    {"Name": "FunctionName", "Value": function},
                    {"Name": "EventSourceMappingUUID", "Value": row.uuid},
                ]
            )
    if function:
        sets.append([{"Name": "FunctionName", "Value": function}])
    return sets


async def lambda_counts(
    clients: Clients, rows: Sequence[MappingAudit], since: datetime, until: datetime
) -> None:
    """Fill each row's `delivered` and `dropped` from CloudWatch (Sum over the window)."""
    seconds = max(60, math.ceil((until - since).total_seconds() / 60) * 60)
    by_region: dict[str | None, list[tuple[MappingAudit, list[list[dict[str, str]]]]]] = {}
    for row in rows:
        sets = _dimension_sets(row)
        if sets:
            by_region.setdefault(row.region, []).append((row, sets))
        else:
            row.metrics_note = "mapping and function unknown: no metrics to compare"
    for region, members in by_region.items():
        queries = []
        for i, (_, sets) in enumerate(members):
            for m, name in enumerate((DELIVERED, DROPPED)):
                for d, dimensions in enumerate(sets):
                    metric = {"Namespace": "AWS/Lambda", "MetricName": name, "Dimensions": dimensions}
                    stat = {"Metric": metric, "Period": seconds, "Stat": "Sum"}
                    queries.append({"Id": f"r{i}m{m}d{d}", "MetricStat": stat})
        try:
            client = await clients.get("cloudwatch", region)
            sums = await _sums(client, queries, since, until)
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            for row, _ in members:
                row.metrics_note = f"cannot read Lambda's metrics (cloudwatch:GetMetricData: {code})"
            continue
        for i, (row, sets) in enumerate(members):
            for m, attribute in enumerate(("delivered", "dropped")):
                found = [sums[f"r{i}m{m}d{d}"] for d in range(len(sets)) if f"r{i}m{m}d{d}" in sums]
                setattr(row, attribute, found[0] if found else None)


async def _sums(
    client: Any, queries: list[dict[str, Any]], since: datetime, until: datetime
) -> dict[str, float]:
    sums: dict[str, float] = {}
    for at in range(0, len(queries), 500):
        token: str | None = None
        for _ in range(20):
            answer = await client.get_metric_data(
                MetricDataQueries=queries[at : at + 500],
                StartTime=since,
                EndTime=until + timedelta(minutes=1),  # the minute of `until` whole
                **({"NextToken": token} if token else {}),
            )
            for result in answer.get("MetricDataResults", []):
                if result.get("Values"):
                    sums[result["Id"]] = sums.get(result["Id"], 0.0) + sum(result["Values"])
            token = answer.get("NextToken")
            if not token:
                break
    return sums


async def audit(
    clients: Clients,
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    watch_streams: Sequence[str] = (),
    watch_functions: Sequence[str] = (),
    allow: AllowList | None = None,
) -> tuple[list[MappingAudit], datetime, datetime, int]:
    """The rows (one per mapping), the window, and how many manifests could not be read.

    StoreError when the archive cannot be listed."""
    until = until or datetime.now(UTC)
    since = since or until - DEFAULT_WINDOW
    ranges, unreadable = await find_ranges(store)
    rows: dict[str, MappingAudit] = {}
    tally(ranges, since, until, rows)
    if watch_streams or watch_functions:
        mappings, _ = await find_mappings(
            clients, watch_streams, watch_functions, allow or AllowList.of(["*"])
        )
        for m in mappings:
            row = rows.setdefault(m.uuid.lower(), MappingAudit(m.uuid.lower(), m.function_arn, None))
            row.function = m.function_arn
            row.streams.add(m.stream_arn)
            row.region = row.region or m.stream_arn.split(":")[3]
    ordered = sorted(rows.values(), key=lambda r: (r.function or "", r.uuid or ""))
    await lambda_counts(clients, ordered, since, until)
    return ordered, since, until, len(unreadable)
