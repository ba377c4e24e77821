"""Nothing expires unnoticed: the at-risk watch of the event source mappings reading allowed streams.

A mapping that is stuck (a poison pill retried until the records expire), disabled or slow lets
records age out of its stream without any failure record: Lambda's `DroppedEventCount` does not
count records that expire. The watch looks, every round, at each watched mapping:

- which mappings: those reading a `--watch-stream` (ListEventSourceMappings by stream) and the
  stream mappings of a `--watch-function`, only for streams `--allow-stream` allows;
- how far behind it is: its `IteratorAge` (CloudWatch `AWS/Lambda`, the newest 1-minute
  Maximum of the last 15 minutes; by FunctionName + EventSourceMappingUUID, else
  EventSourceMappingUUID, else the function's own, which covers all of its mappings), aged by
  the time since that datapoint;
- against the stream's retention (24 h for DynamoDB Streams; Kinesis: DescribeStreamSummary), or
  the mapping's MaximumRecordAgeInSeconds when that is shorter and it has no on-failure
  destination (it then drops records silently at that age):
  the margin, `retention - age`, exported per mapping (Prometheus gauge
  `replayer_mapping_expiry_margin_seconds`; EMF `MappingExpiryMarginSeconds` in Lambda) and
  warned about (`mapping_at_risk`) under `--at-risk-margin`;
- its state: `Disabled`/`Disabling`, stuck in `Enabling`/`Updating`/`Creating`, a
  `LastProcessingResult` that says PROBLEM (`mapping_not_processing`).

With `--rescue-at-risk`, the shards of an at-risk mapping's stream are archived: from the trim
horizon (or right after what an earlier rescue archived: read back from the archive, so a restart
or another replica goes on from there) to the shard's newest record, at most
`--at-risk-max-records` a shard per round. The mapping's own position is not visible (IteratorAge
says how far behind it is, not where), so every record still in the shard is taken; records the
mapping did pass are archived too, harmlessly. Each window is one range (condition `AtRisk`, the
manifest `marked: at-risk`), written through the same archive sinks, create-only: the same window
converges, and a later failure record of the same records is its own range beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.allow import AllowList
from replayer.archive.layout import safe_segment, stream_path
from replayer.archive.read import find_ranges
from replayer.archive.store import Store, StoreError, store_from_uri
from replayer.aws import RAW_BODY, Clients, error_code
from replayer.config import Settings
from replayer.core import Replayer
from replayer.mappings import from_esm
from replayer.model import AT_RISK, Failure, Origin, OutcomeKind, StreamKind, parse_stream_arn
from replayer.observe import Recorder
from replayer.readers import shard_lock
from replayer.readers.kinesis import GET_RECORDS_BUDGET
from replayer.sources import readers_for, sinks_for
from replayer.wire import loads

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = [
    "MappingWatch",
    "Rescue",
    "WatchedMapping",
    "Watcher",
    "find_mappings",
    "is_schedule_event",
    "iterator_ages",
    "watch_round",
    "watches",
    "watching",
]

log = logs.get_logger("replayer.watch")

DYNAMODB_RETENTION = timedelta(hours=24)
LOOKBACK_SECONDS = 900  # IteratorAge datapoints looked at: the newest of the last 15 minutes
_PERIOD = 60
_QUERIES_PER_CALL = 500  # GetMetricData's limit
_STUCK_STATES = ("Enabling", "Updating", "Creating")
_STUCK_AFTER = timedelta(minutes=15)
_MAX_EMPTY_PAGES = 3  # an open shard's tip: empty pages in a row
_MAX_PAGES = 200  # pages one rescue reads of one shard, however small
_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
_MAX_LIST_PAGES = 50  # ListEventSourceMappings pages of one stream or function (100 mappings each)


@dataclass(frozen=True, slots=True)
class WatchedMapping:
    """One event source mapping reading an allowed stream, as ListEventSourceMappings gave it."""

    uuid: str
    function_arn: str
    stream_arn: str
    state: str | None
    last_result: str | None
    state_reason: str | None
    last_modified: datetime | None
    config: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def function_name(self) -> str:
        """The function's name, without its qualifier (the metrics' FunctionName)."""
        return self.function_arn.split(":")[6] if self.function_arn.count(":") >= 6 else self.function_arn

    @property
    def resource(self) -> str | None:
        """``NAME:QUALIFIER`` when the mapping invokes a version or alias (the metrics' Resource)."""
        parts = self.function_arn.split(":")
        return f"{parts[6]}:{parts[7]}" if len(parts) >= 8 else None

    @property
    def drops_after(self) -> float | None:
        """Seconds after which the mapping discards a record with no failure record anywhere: its
        MaximumRecordAgeInSeconds when it has no on-failure destination (None: only the retention)."""
        age = self.config.get("MaximumRecordAgeInSeconds")
        destination = (self.config.get("DestinationConfig") or {}).get("OnFailure") or {}
        if isinstance(age, int) and age > 0 and not destination.get("Destination"):
            return float(age)
        return None

    @classmethod
    def of(cls, esm: Mapping[str, Any]) -> WatchedMapping:
        modified = esm.get("LastModified")
        if isinstance(modified, int | float):
            modified = datetime.fromtimestamp(modified, UTC)
        return cls(
            uuid=str(esm.get("UUID")),
            function_arn=str(esm.get("FunctionArn")),
            stream_arn=str(esm.get("EventSourceArn")),
            state=esm.get("State"),
            last_result=esm.get("LastProcessingResult"),
            state_reason=esm.get("StateTransitionReason"),
            last_modified=modified if isinstance(modified, datetime) else None,
            config=esm,
        )


@dataclass(frozen=True, slots=True)
class Rescue:
    """One at-risk window archived (or tried): its range and how it ended."""

    range_id: str
    shard_id: str
    start_sequence: str
    end_sequence: str
    records: int
    outcome: str
    reason: str = ""

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class MappingWatch:
    """What one round saw of one mapping: its margin to expiry and what is wrong with it."""

    mapping: WatchedMapping
    retention_seconds: float
    iterator_age_seconds: float | None  # None: no datapoint in the last 15 minutes
    margin_seconds: float | None  # retention - age; None when the age is unknown
    at_risk: bool
    problems: tuple[str, ...] = ()
    rescues: tuple[Rescue, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "uuid": self.mapping.uuid,
            "function": self.mapping.function_arn,
            "stream": self.mapping.stream_arn,
            "state": self.mapping.state,
            "last_processing_result": self.mapping.last_result,
            "retention_seconds": self.retention_seconds,
            "iterator_age_seconds": self.iterator_age_seconds,
            "margin_seconds": self.margin_seconds,
            "at_risk": self.at_risk,
            "problems": list(self.problems),
            "rescued": [r.describe() for r in self.rescues],
        }


def watches(settings: Settings) -> bool:
    """True when the settings name something to watch (--watch-stream, --watch-function)."""
    return bool(settings.watch_streams or settings.watch_functions)


def is_schedule_event(event: Mapping[str, Any]) -> bool:
    """True for an EventBridge schedule's event (the Lambda deployment's watch round)."""
    return event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event"


# ---- which mappings


async def _list(client: Any, **by: str) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    marker: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        page = await client.list_event_source_mappings(**by, **({"Marker": marker} if marker else {}))
        found += page.get("EventSourceMappings", [])
        marker = page.get("NextMarker")
        if not marker:
            break
    return found


def _function_region(function: str) -> str | None:
    parts = function.split(":")
    return parts[3] if function.startswith("arn:") and len(parts) > 3 else None


async def find_mappings(
    clients: Clients, streams: Iterable[str], functions: Iterable[str], allow: AllowList
) -> tuple[list[WatchedMapping], list[str]]:
    """The stream mappings of the watched streams and functions (of allowed streams only, each once),
    and a line for each lookup that failed."""
    found: dict[str, WatchedMapping] = {}
    problems: list[str] = []
    lookups: list[tuple[str, str | None, str | None, dict[str, str]]] = []
    for arn in streams:
        parsed = parse_stream_arn(arn)
        if parsed is not None:
            lookups.append((arn, parsed.region, parsed.account, {"EventSourceArn": arn}))
    for function in functions:
        lookups.append((function, _function_region(function), None, {"FunctionName": function}))
    for what, region, account, by in lookups:
        try:
            client = await clients.get("lambda", region, account)
            mappings = await _list(client, **by)
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            problems.append(f"cannot list the mappings of {what} (lambda:ListEventSourceMappings: {code})")
            continue
        for esm in mappings:
            stream = str(esm.get("EventSourceArn"))
            if parse_stream_arn(stream) is not None and allow.allows(stream) and esm.get("UUID"):
                found.setdefault(str(esm["UUID"]), WatchedMapping.of(esm))
    return list(found.values()), problems


# ---- how far behind


def _dimension_sets(mapping: WatchedMapping) -> list[list[dict[str, str]]]:
    """The IteratorAge series that can stand for this mapping, the most specific first."""
    name, uuid = mapping.function_name, mapping.uuid
    sets = [
        [{"Name": "FunctionName", "Value": name}, {"Name": "EventSourceMappingUUID", "Value": uuid}],
        [{"Name": "EventSourceMappingUUID", "Value": uuid}],
    ]
    if mapping.resource:
        sets.append(
            [{"Name": "FunctionName", "Value": name}, {"Name": "Resource", "Value": mapping.resource}]
        )
    sets.append([{"Name": "FunctionName", "Value": name}])  # all of the function's mappings: the worst
    return sets


async def iterator_ages(
    clients: Clients, mappings: Sequence[WatchedMapping], *, now: float | None = None
) -> dict[str, float]:
    """UUID -> seconds the mapping's oldest unprocessed record is old now (its newest IteratorAge
    Maximum, plus the time since), for the mappings CloudWatch has a datapoint of."""
    now = time.time() if now is None else now
    by_region: dict[str, list[WatchedMapping]] = {}
    for m in mappings:
        parsed = parse_stream_arn(m.stream_arn)
        by_region.setdefault(parsed.region if parsed else "", []).append(m)
    ages: dict[str, float] = {}
    for region, members in by_region.items():
        queries: list[tuple[str, str, int, dict[str, Any]]] = []  # (id, uuid, rank, query)
        for i, m in enumerate(members):
            for rank, dimensions in enumerate(_dimension_sets(m)):
                metric = {"Namespace": "AWS/Lambda", "MetricName": "IteratorAge", "Dimensions": dimensions}
                stat = {"Metric": metric, "Period": _PERIOD, "Stat": "Maximum"}  # in milliseconds
                queries.append((f"m{i}r{rank}", m.uuid, rank, {"Id": f"m{i}r{rank}", "MetricStat": stat}))
        best: dict[str, tuple[int, float]] = {}
        client = await clients.get("cloudwatch", region or None)
        for at in range(0, len(queries), _QUERIES_PER_CALL):
            chunk = queries[at : at + _QUERIES_PER_CALL]
            by_id = {q[0]: q for q in chunk}
            for result in await _metric_data(client, [q[3] for q in chunk], now):
                values, stamps = result.get("Values") or [], result.get("Timestamps") or []
                if not values or result.get("Id") not in by_id:
                    continue
                _, uuid, rank, _ = by_id[result["Id"]]
                newest = max(
                    range(len(values)), key=lambda k: stamps[k].timestamp() if k < len(stamps) else 0
                )
                stamp = stamps[newest].timestamp() if newest < len(stamps) else now
                age = float(values[newest]) / 1000 + max(0.0, now - stamp - _PERIOD)
                if uuid not in best or rank < best[uuid][0]:
                    best[uuid] = (rank, age)
        ages |= {uuid: age for uuid, (_, age) in best.items()}
    return ages


async def _metric_data(client: Any, queries: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    token: str | None = None
    for _ in range(20):  # pages of one call: bounded
        answer = await client.get_metric_data(
            MetricDataQueries=queries,
            StartTime=datetime.fromtimestamp(now - LOOKBACK_SECONDS, UTC),
            EndTime=datetime.fromtimestamp(now + _PERIOD, UTC),
            ScanBy="TimestampDescending",
            **({"NextToken": token} if token else {}),
        )
        for result in answer.get("MetricDataResults", []):
            kept = results.setdefault(result["Id"], {"Id": result["Id"], "Values": [], "Timestamps": []})
            kept["Values"] += result.get("Values", [])
            kept["Timestamps"] += result.get("Timestamps", [])
        token = answer.get("NextToken")
        if not token:
            break
    return list(results.values())


def problems_of(mapping: WatchedMapping, now: datetime) -> tuple[str, ...]:
    """What its state says: not processing, stuck in a transition, a problem with its last batch."""
    problems = []
    if mapping.state in ("Disabled", "Disabling"):
        problems.append(f"the mapping is {mapping.state}: its records age out of the stream unprocessed")
    elif (
        mapping.state in _STUCK_STATES
        and mapping.last_modified
        and now - mapping.last_modified > _STUCK_AFTER
    ):
        minutes = int((now - mapping.last_modified).total_seconds() // 60)
        problems.append(f"the mapping has been {mapping.state} for {minutes} minutes")
    if mapping.last_result and mapping.last_result.upper().startswith("PROBLEM"):
        problems.append(f"last processing result: {mapping.last_result}")
    return tuple(problems)


# ---- the watcher


class Watcher:
    """One round at a time (`round`), or rounds every `settings.watch_interval` (`run`)."""

    def __init__(self, settings: Settings, clients: Clients, recorder: Recorder) -> None:
        self.settings = settings
        self.clients = clients
        self.recorder = recorder
        self.allow = AllowList.of(settings.allow_streams)
        self._retention: dict[str, float] = {}
        self._rescued: dict[tuple[str, str], str] = {}  # (stream, shard) -> last sequence archived
        self._archives = [u for u in settings.to if u.startswith(("s3://", "file:"))]
        self._replayer: Replayer | None = None
        self._gauges: tuple[Gauge, Gauge, Counter] | None = None
        try:
            self._gauges = _prometheus(recorder.registry)
        except ValueError:  # no registry: the Lambda deployment, whose rounds are flushed as EMF
            self._gauges = None

    @property
    def enabled(self) -> bool:
        return watches(self.settings)

    def _archiver(self) -> Replayer:
        """The core with the archive sinks only: at-risk records are kept, never sent to a function
        (the mapping may still deliver them)."""
        if self._replayer is None:
            only_archives = replace(self.settings, to=tuple(self._archives))
            self._replayer = Replayer(
                self.clients,
                sinks_for(only_archives, self.clients, self.recorder),
                allow=self.allow,
                readers=readers_for(only_archives, self.clients, self.recorder),
                find_mappings=False,  # the watch knows the mapping
                range_budget=self.settings.range_budget_seconds,
            )
        return self._replayer

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set; a round that fails is logged, and the next one comes."""
        log.info(
            "watch_started", streams=list(self.settings.watch_streams), functions=list(self.settings.watch_functions),
            interval_seconds=self.settings.watch_interval, at_risk_margin_seconds=self.settings.at_risk_margin,
            rescue=self.settings.rescue_at_risk,
        )  # fmt: skip
        while not stop.is_set():
            try:
                await self.round()
            except Exception as exc:  # the watch never stops the service
                log.error("watch_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.watch_interval)

    async def round(self) -> list[MappingWatch]:
        """Look at every watched mapping once (and rescue what is at risk, when asked)."""
        mappings, problems = await find_mappings(
            self.clients, self.settings.watch_streams, self.settings.watch_functions, self.allow
        )
        for problem in problems:
            log.warning("watch_lookup_failed", problem=problem)
        try:
            ages = await iterator_ages(self.clients, mappings)
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            log.warning("watch_metrics_unreadable", problem=f"cloudwatch:GetMetricData: {code}")
            ages = {}
        now = datetime.now(UTC)
        margin = self.settings.at_risk_margin
        seen: list[MappingWatch] = []
        rescued_streams: dict[str, tuple[Rescue, ...]] = {}
        for m in mappings:
            retention = await self.retention(m.stream_arn)
            limit = min(retention, m.drops_after or retention)  # no destination: dropped at its maximum age
            age = ages.get(m.uuid)
            left = limit - age if age is not None else None
            watch = MappingWatch(
                m, retention, age, left, left is not None and left < margin, problems_of(m, now)
            )
            if watch.at_risk:
                log.warning(
                    "mapping_at_risk", uuid=m.uuid, function=m.function_arn, stream_arn=m.stream_arn,
                    iterator_age_seconds=int(age or 0), retention_seconds=int(retention),
                    margin_seconds=int(left or 0), at_risk_margin_seconds=int(margin), state=m.state,
                )  # fmt: skip
                if self.settings.rescue_at_risk:
                    if m.stream_arn not in rescued_streams:  # one rescue a stream per round
                        rescued_streams[m.stream_arn] = await self.rescue(m, watch)
                    watch = replace(watch, rescues=rescued_streams[m.stream_arn])
            for problem in watch.problems:
                log.warning("mapping_not_processing", uuid=m.uuid, function=m.function_arn,
                            stream_arn=m.stream_arn, problem=problem)  # fmt: skip
            seen.append(watch)
        self._export(seen)
        return seen

    async def retention(self, stream_arn: str) -> float:
        """The stream's retention in seconds (asked once per stream; 24 h when it cannot be read)."""
        if stream_arn in self._retention:
            return self._retention[stream_arn]
        parsed = parse_stream_arn(stream_arn)
        seconds = DYNAMODB_RETENTION.total_seconds()
        if parsed is not None and parsed.kind is StreamKind.KINESIS:
            try:
                client = await self.clients.get("kinesis", parsed.region, parsed.account)
                summary = await client.describe_stream_summary(StreamARN=stream_arn)
                seconds = int(summary["StreamDescriptionSummary"]["RetentionPeriodHours"]) * 3600.0
            except (ClientError, BotoCoreError, KeyError, TypeError, ValueError) as exc:
                log.warning("retention_unknown", stream_arn=stream_arn, error=str(exc), assumed_hours=24)
                return seconds  # the shortest there is, and asked again next round
        self._retention[stream_arn] = seconds
        return seconds

    # ---- metrics

    def _export(self, seen: Sequence[MappingWatch]) -> None:
        if self._gauges is not None:
            margin_gauge, at_risk_gauge, _ = self._gauges
            for w in seen:
                labels = (w.mapping.uuid, w.mapping.function_name, w.mapping.stream_arn)
                margin_gauge.labels(*labels).set(math.inf if w.margin_seconds is None else w.margin_seconds)
                at_risk_gauge.labels(*labels).set(1 if w.at_risk else 0)

    async def flush_emf(self, seen: Sequence[MappingWatch]) -> None:
        """The round's margins as CloudWatch embedded metrics (the Lambda deployment's watch)."""
        from replayer.observe.emf import flush_margins

        margins = {
            (w.mapping.uuid, w.mapping.function_name): w.margin_seconds
            for w in seen
            if w.margin_seconds is not None
        }
        rescued = sum(r.records for w in seen for r in w.rescues if r.outcome != "failed")
        await flush_margins(margins, at_risk=sum(1 for w in seen if w.at_risk), rescued=rescued)

    # ---- rescue

    async def rescue(self, mapping: WatchedMapping, watch: MappingWatch) -> tuple[Rescue, ...]:
        """Archive each shard of the mapping's stream from the trim horizon (or after the last window
        archived) to its newest record, at most --at-risk-max-records per shard."""
        parsed = parse_stream_arn(mapping.stream_arn)
        if parsed is None:
            return ()
        try:
            client = await self.clients.get(
                "dynamodbstreams" if parsed.kind is StreamKind.DYNAMODB else "kinesis",
                parsed.region,
                parsed.account,
            )
            shards = await _shards(client, parsed.kind, mapping.stream_arn)
        except (ClientError, BotoCoreError) as exc:
            log.error("rescue_failed", stream_arn=mapping.stream_arn, error=str(exc))
            return ()
        done = []
        for shard in shards:
            try:
                # bounded: scanning the window and the core's attempt at it (its own range budget)
                async with asyncio.timeout(2 * self.settings.range_budget_seconds):
                    rescue = await self._rescue_shard(client, parsed.kind, mapping, watch, shard)
            except (ClientError, BotoCoreError, StoreError, TimeoutError) as exc:
                log.error("rescue_failed", stream_arn=mapping.stream_arn, shard_id=shard, error=str(exc))
                continue
            if rescue is not None:
                done.append(rescue)
        return tuple(done)

    async def _rescued_to(self, stream_arn: str, shard_id: str) -> str | None:
        """The last sequence number an earlier at-risk window of this shard archived (None: none)."""
        key = (stream_arn, shard_id)
        if key in self._rescued:
            return self._rescued[key]
        parsed = parse_stream_arn(stream_arn)
        store: Store | None = store_from_uri(self._archives[0], self.clients) if self._archives else None
        last: int | None = None
        if parsed is not None and store is not None:
            try:
                ranges, _ = await find_ranges(store, [f"{stream_path(parsed)}/{safe_segment(shard_id)}"])
            except StoreError as exc:
                if exc.code in _DENIED:  # windows may then be archived again, never lost
                    log.warning("rescue_cannot_list_archive", problem=f"s3:ListBucket: {exc}")
                elif exc.code != "NoSuchDirectory":  # a file: archive not made yet holds nothing
                    raise
                ranges = []
            ends = [r.failure.end for r in ranges if r.failure.at_risk]
            last = max(ends) if ends else None
        if last is not None:
            self._rescued[key] = str(last)
        return str(last) if last is not None else None

    async def _rescue_shard(
        self, client: Any, kind: StreamKind, mapping: WatchedMapping, watch: MappingWatch, shard_id: str
    ) -> Rescue | None:
        after = await self._rescued_to(mapping.stream_arn, shard_id)
        most = min(self.settings.at_risk_max_records, self.settings.max_records_per_range)
        probe = Failure(kind, mapping.stream_arn, shard_id, "0", "0")  # names the shard, for its lock
        async with shard_lock(probe):  # one reader a shard in this process: the scan waits its turn too
            bounds = await _window(client, kind, mapping.stream_arn, shard_id, after, most)
        if bounds is None:
            return None  # nothing new in the shard
        first, last, count = bounds
        failure = Failure(
            kind=kind,
            stream_arn=mapping.stream_arn,
            shard_id=shard_id,
            start_sequence=first,
            end_sequence=last,
            condition=AT_RISK,
            origin=Origin.LAMBDA_ESM,
            source_arn=mapping.function_arn,
            timestamp=datetime.now(UTC),
            raw={
                "atRisk": {
                    "eventSourceMappingUUID": mapping.uuid,
                    "functionArn": mapping.function_arn,
                    "state": mapping.state,
                    "lastProcessingResult": mapping.last_result,
                    "iteratorAgeSeconds": watch.iterator_age_seconds,
                    "retentionSeconds": watch.retention_seconds,
                    "marginSeconds": watch.margin_seconds,
                    "records": count,
                }
            },
            mapping_uuid=mapping.uuid,
            mapping=from_esm(mapping.config),
        )
        outcome = await self._archiver().replay(failure)
        saved = outcome.kind in (OutcomeKind.REPLAYED, OutcomeKind.PARTIAL, OutcomeKind.EXPIRED)
        if saved:
            self._rescued[(mapping.stream_arn, shard_id)] = last
            if self._gauges is not None:
                self._gauges[2].labels(mapping.uuid).inc(outcome.recovered)
        log.warning(
            "at_risk_archived" if saved else "rescue_failed", uuid=mapping.uuid, stream_arn=mapping.stream_arn,
            shard_id=shard_id, range_id=failure.range_id, start=first, end=last, records=outcome.recovered,
            outcome=outcome.kind.value, reason=outcome.reason,
        )  # fmt: skip
        return Rescue(
            failure.range_id, shard_id, first, last, outcome.recovered,
            outcome.kind.value if saved else "failed", outcome.reason,
        )  # fmt: skip


def _prometheus(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Counter]:
    from prometheus_client import Counter, Gauge

    labels = ["uuid", "function", "stream"]
    return (
        Gauge(
            "replayer_mapping_expiry_margin_seconds",
            "Seconds between a watched mapping's oldest unprocessed record (IteratorAge) and the stream's "
            "retention (+Inf: no IteratorAge datapoint in the last 15 minutes)",
            labels, registry=registry,
        ),
        Gauge(
            "replayer_mapping_at_risk", "1 when a watched mapping is within --at-risk-margin of expiry",
            labels, registry=registry,
        ),
        Counter(
            "replayer_at_risk_records_archived", "Records archived from the shards of at-risk mappings",
            ["uuid"], registry=registry,
        ),
    )  # fmt: skip


async def _shards(client: Any, kind: StreamKind, stream_arn: str) -> list[str]:
    shards: list[str] = []
    if kind is StreamKind.DYNAMODB:
        start: str | None = None
        while True:
            answer = await client.describe_stream(
                StreamArn=stream_arn, **({"ExclusiveStartShardId": start} if start else {})
            )
            description = answer["StreamDescription"]
            shards += [s["ShardId"] for s in description.get("Shards", [])]
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards
    token: str | None = None
    while True:
        answer = await client.list_shards(**({"NextToken": token} if token else {"StreamARN": stream_arn}))
        shards += [s["ShardId"] for s in answer.get("Shards", [])]
        token = answer.get("NextToken")
        if not token:
            return shards


async def _iterator(
    client: Any, kind: StreamKind, stream_arn: str, shard_id: str, after: str | None
) -> str | None:
    if kind is StreamKind.DYNAMODB:
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id}
        try:
            if after is not None:
                answer = await client.get_shard_iterator(
                    **kwargs, ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after
                )
                return answer.get("ShardIterator")  # type: ignore[no-any-return]
        except ClientError as exc:
            if error_code(exc) != "TrimmedDataAccessException":
                raise
        answer = await client.get_shard_iterator(**kwargs, ShardIteratorType="TRIM_HORIZON")
        return answer.get("ShardIterator")  # type: ignore[no-any-return]
    kwargs = {"StreamARN": stream_arn, "ShardId": shard_id}
    if after is not None:
        kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
    else:
        kwargs["ShardIteratorType"] = "TRIM_HORIZON"
    answer = await client.get_shard_iterator(**kwargs)
    return answer.get("ShardIterator")  # type: ignore[no-any-return]


async def _window(
    client: Any, kind: StreamKind, stream_arn: str, shard_id: str, after: str | None, most: int
) -> tuple[str, str, int] | None:
    """(first, last, count) of the records from the trim horizon (or after `after`) to the shard's
    newest one, at most `most` records; None when there is none. Only sequence numbers are kept."""
    iterator = await _iterator(client, kind, stream_arn, shard_id, after)
    first: str | None = None
    last: str | None = None
    count = empty = 0
    for _ in range(_MAX_PAGES):
        if iterator is None or count >= most:
            break
        extra = {"StreamARN": stream_arn} if kind is StreamKind.KINESIS else {}
        if kind is StreamKind.KINESIS:  # the shard's 5 reads a second, shared with every reader here
            await GET_RECORDS_BUDGET.acquire((stream_arn, shard_id))
        answer = await client.get_records(ShardIterator=iterator, Limit=min(most - count, 1000), **extra)
        page = (
            loads(answer[RAW_BODY]) if RAW_BODY in answer else answer
        )  # GetRecords is kept raw (replayer.aws)
        records = page.get("Records") or []
        for record in records:
            seq = (
                record["dynamodb"]["SequenceNumber"]
                if kind is StreamKind.DYNAMODB
                else record["SequenceNumber"]
            )
            first = first or seq
            last = seq
        count += len(records)
        iterator = page.get("NextShardIterator")
        if kind is StreamKind.KINESIS and page.get("MillisBehindLatest") == 0 and not records:
            break
        empty = 0 if records else empty + 1
        if empty >= _MAX_EMPTY_PAGES:
            break
    if first is None or last is None:
        return None
    return first, last, min(count, most)


# ---- the service's hook


class watching:
    """Runs the watch beside the service while the block runs (nothing when nothing is watched)."""

    def __init__(self, settings: Settings, clients: Clients, recorder: Recorder) -> None:
        self.watcher = Watcher(settings, clients, recorder)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        if self.watcher.enabled:
            self._task = asyncio.create_task(self.watcher.run(self._stop), name="watch")
        return self.watcher

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


_lambda_watchers: dict[int, tuple[Clients, Watcher]] = {}


async def watch_round(settings: Settings, clients: Clients, recorder: Recorder) -> dict[str, Any]:
    """The Lambda deployment's scheduled round: one look at every watched mapping, flushed as EMF.

    The watcher lives as long as the execution environment (what it rescued is remembered)."""
    kept = _lambda_watchers.get(id(clients))
    if kept is None or kept[0] is not clients:
        kept = _lambda_watchers[id(clients)] = (clients, Watcher(settings, clients, recorder))
    watcher = kept[1]
    if not watcher.enabled:
        log.warning("watch_not_configured", problem="set REPLAYER_WATCH_STREAMS or REPLAYER_WATCH_FUNCTIONS")
        return {
            "watched": [],
            "note": "nothing is watched: set REPLAYER_WATCH_STREAMS or REPLAYER_WATCH_FUNCTIONS",
        }
    seen = await watcher.round()
    await watcher.flush_emf(seen)
    return {"watched": [w.describe() for w in seen]}
