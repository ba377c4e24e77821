"""Typed values that cross module boundaries: a `Failure` in, an `Outcome` out.

Raw dicts stay at the edges (parsing in, serializing out); everything between the
source, the reader and the sinks is one of these frozen dataclasses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, overload

__all__ = [
    "AT_RISK",
    "Failure",
    "Gap",
    "KAFKA_SELF_MANAGED",
    "MAX_KAFKA_PARTITION",
    "Origin",
    "Outcome",
    "OutcomeKind",
    "RecordPage",
    "StreamKind",
    "SourceMapping",
    "StreamRecord",
    "parse_stream_arn",
    "records_lost",
    "StreamArn",
    "kafka_self_managed_source",
    "kafka_servers",
    "kafka_shard_id",
    "kafka_topic_ok",
]


class StreamKind(StrEnum):
    DYNAMODB = "dynamodb"
    KINESIS = "kinesis"
    KAFKA = "kafka"  # Amazon MSK or self-managed Apache Kafka: topic-partition + offsets


# The condition of a range the at-risk watch archived (`replayer.watch`) before any failure record
# named it: its manifest marks it `at-risk`, not `failed`.
AT_RISK = "AtRisk"


class Origin(StrEnum):
    """Who discarded the batch: a Lambda event source mapping or an EventBridge pipe."""

    LAMBDA_ESM = "lambda-esm"
    PIPES = "pipes"
    MANUAL = "manual"


# Names of only dots are refused (lookahead): they would climb out of an archive folder.
_DDB_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):dynamodb:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"table/(?P<table>(?!\.+/)[A-Za-z0-9_.-]{1,255})/stream/(?P<label>(?!\.+\Z)[A-Za-z0-9:._-]{1,64})"
)
_KINESIS_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):kinesis:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"stream/(?P<stream>(?!\.+\Z)[A-Za-z0-9_.-]{1,128})"
)
# An Amazon MSK cluster ARN: cluster/<name>/<uuid> (names are letters, digits and hyphens).
_MSK_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):kafka:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"cluster/(?P<cluster>[A-Za-z0-9-]{1,64})/(?P<uuid>[A-Za-z0-9-]{1,64})"
)
# How a self-managed Kafka cluster is named where an ARN would be (allow-lists, archive folders):
# kafka://<its bootstrap servers, as the failure record lists them, lower-cased, sorted, comma-joined>.
KAFKA_SELF_MANAGED = "kafka://"


@dataclass(frozen=True, slots=True)
class StreamArn:
    """The parts of a DynamoDB or Kinesis stream ARN that the replayer uses."""

    arn: str
    kind: StreamKind
    partition: str
    region: str
    account: str
    name: str  # table name (DynamoDB), stream name (Kinesis) or cluster name (MSK)
    label: str | None  # DynamoDB stream label, MSK cluster UUID; None for Kinesis


def parse_stream_arn(arn: str) -> StreamArn | None:
    """Split a stream ARN (or an MSK cluster ARN), or return None when it is not a well-formed one.

    The patterns are strict on purpose: names that pass them contain no path
    separators, so they can never steer an archive key or file path.
    """
    if m := _DDB_ARN.fullmatch(arn):
        return StreamArn(
            arn, StreamKind.DYNAMODB, m["partition"], m["region"], m["account"], m["table"], m["label"]
        )
    if m := _KINESIS_ARN.fullmatch(arn):
        return StreamArn(
            arn, StreamKind.KINESIS, m["partition"], m["region"], m["account"], m["stream"], None
        )
    if m := _MSK_ARN.fullmatch(arn):
        return StreamArn(
            arn, StreamKind.KAFKA, m["partition"], m["region"], m["account"], m["cluster"], m["uuid"]
        )
    return None


@dataclass(frozen=True, slots=True)
class SourceMapping:
    """The event source mapping (or pipe) that gave up on a batch, as found, or why it was not."""

    found: bool
    kind: str  # "lambda-esm" or "pipe"
    arn: str | None = None  # the pipe's ARN, or the mapping's function ARN
    uuid: str | None = None  # a Lambda event source mapping's UUID
    filters: tuple[str, ...] = ()  # its FilterCriteria patterns, as the mapping holds them
    batch_size: int | None = None
    state: str | None = None
    note: str = ""  # why it was not found, or anything odd about it

    @classmethod
    def read_back(cls, described: Any) -> SourceMapping | None:
        """The mapping a manifest noted (its `describe()`); None when absent or not in that shape."""
        if not isinstance(described, Mapping) or not isinstance(described.get("found"), bool):
            return None
        filters = described.get("filters")
        batch = described.get("batch_size")

        def text(key: str) -> str | None:
            value = described.get(key)
            return value if isinstance(value, str) else None

        return cls(
            found=described["found"],
            kind=text("kind") or "lambda-esm",
            arn=text("arn"),
            uuid=text("uuid"),
            filters=tuple(f for f in filters if isinstance(f, str)) if isinstance(filters, list) else (),
            batch_size=batch if isinstance(batch, int) and not isinstance(batch, bool) else None,
            state=text("state"),
            note=text("note") or "",
        )

    def describe(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "kind": self.kind,
            "arn": self.arn,
            "uuid": self.uuid,
            "filters": list(self.filters),
            "batch_size": self.batch_size,
            "state": self.state,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Failure:
    """One discarded batch: records `start_sequence`..`end_sequence` of one shard.

    Sequence numbers keep their original strings (they are decimal numbers of differing
    lengths) and are compared through the integer properties `start` and `end`.

    A Kafka range (kind KAFKA) is offsets `start`..`end` of partition `partition` of `topic`:
    `stream_arn` is the MSK cluster ARN, or `kafka://servers` for a self-managed cluster,
    `shard_id` is "<topic>-<partition>" (as Lambda keys its records) and the sequence numbers
    are the offsets, so the range bookkeeping, `range_id` and the allow-list work unchanged.
    """

    kind: StreamKind
    stream_arn: str
    shard_id: str
    start_sequence: str
    end_sequence: str
    batch_size: int | None = None
    first_arrival: datetime | None = None
    last_arrival: datetime | None = None
    condition: str | None = None
    origin: Origin = Origin.LAMBDA_ESM
    source_arn: str | None = None  # the function or pipe that gave up on the batch
    timestamp: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # Records carried inline by an S3 on-failure destination: nothing needs re-reading.
    payload: Sequence[Mapping[str, Any]] | None = field(default=None, compare=False)
    mapping_uuid: str | None = None  # the ESM UUID of an S3 on-failure destination's object key
    mapping: SourceMapping | None = field(default=None, compare=False)  # found by replayer.mappings
    topic: str | None = None  # Kafka only: the topic and partition of the range
    partition: int | None = None
    bootstrap_servers: str | None = field(
        default=None, compare=False
    )  # Kafka: as the record says (never used)

    @property
    def start(self) -> int:
        return int(self.start_sequence)

    @property
    def end(self) -> int:
        return int(self.end_sequence)

    @property
    def arn(self) -> StreamArn:
        """The stream's (or MSK cluster's) ARN split; ValueError for a self-managed Kafka cluster."""
        parsed = parse_stream_arn(self.stream_arn)
        if parsed is None:  # parsing guarantees this never happens, but for self-managed Kafka
            raise ValueError(f"not a stream ARN: {self.stream_arn!r}")
        return parsed

    @property
    def self_managed(self) -> bool:
        """True for a range of a self-managed Kafka cluster (no ARN: `kafka://servers`)."""
        return self.kind is StreamKind.KAFKA and self.stream_arn.startswith(KAFKA_SELF_MANAGED)

    @property
    def region(self) -> str:
        return self.arn.region

    @property
    def at_risk(self) -> bool:
        """True for a window the at-risk watch archived (no failure record named it)."""
        return self.condition == AT_RISK

    @property
    def range_id(self) -> str:
        """A stable id of (stream, shard, start, end): names archive objects, de-duplicates work."""
        key = "\n".join((self.stream_arn, self.shard_id, str(self.start), str(self.end)))
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        """The failure as JSON-able metadata (no record contents); `from_description` reads it back."""
        described: dict[str, Any] = {
            "range_id": self.range_id,
            "kind": self.kind.value,
            "stream_arn": self.stream_arn,
            "shard_id": self.shard_id,
            "start_sequence": self.start_sequence,
            "end_sequence": self.end_sequence,
            "batch_size": self.batch_size,
            "first_arrival": self.first_arrival.isoformat() if self.first_arrival else None,
            "last_arrival": self.last_arrival.isoformat() if self.last_arrival else None,
            "condition": self.condition,
            "origin": self.origin.value,
            "source_arn": self.source_arn,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "inline_payload": self.payload is not None,
        }
        if self.kind is StreamKind.KAFKA:
            described["topic"], described["partition"] = self.topic, self.partition
            described["bootstrap_servers"] = self.bootstrap_servers  # as the record said: for the event only
        if self.mapping is not None:
            described["mapping"] = self.mapping.describe()
        return described

    @classmethod
    def from_description(cls, described: Mapping[str, Any], raw: Any = None) -> Failure:
        """The Failure a `describe()` document stands for (with `raw` as its invocation record).

        ValueError says what is wrong: every field is checked as strictly as parsing would.
        """
        arn = described.get("stream_arn")
        parsed = parse_stream_arn(arn) if isinstance(arn, str) else None
        kafka = _kafka_fields(described, parsed)
        if parsed is None and kafka is None:
            raise ValueError("range.stream_arn is not a stream ARN")
        kind = parsed.kind if parsed is not None else StreamKind.KAFKA
        start, end, shard = (described.get(k) for k in ("start_sequence", "end_sequence", "shard_id"))
        if not (isinstance(start, str) and start.isdigit() and isinstance(end, str) and end.isdigit()):
            raise ValueError("range.start_sequence / range.end_sequence are not sequence numbers")
        if int(start) > int(end):
            raise ValueError("range starts after it ends")
        if not isinstance(shard, str) or not shard:
            raise ValueError("range.shard_id is missing")
        batch_size = described.get("batch_size")
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)):
            raise ValueError("range.batch_size is not a number")
        condition, source_arn = described.get("condition"), described.get("source_arn")
        try:
            origin = Origin(described.get("origin") or Origin.LAMBDA_ESM.value)
        except ValueError:
            raise ValueError("range.origin is not one replayer knows") from None
        failure = cls(
            kind=kind,
            stream_arn=str(arn),
            shard_id=shard,
            start_sequence=start,
            end_sequence=end,
            batch_size=batch_size,
            first_arrival=_optional_time(described.get("first_arrival"), "range.first_arrival"),
            last_arrival=_optional_time(described.get("last_arrival"), "range.last_arrival"),
            condition=condition if isinstance(condition, str) else None,
            origin=origin,
            source_arn=source_arn if isinstance(source_arn, str) else None,
            timestamp=_optional_time(described.get("timestamp"), "range.timestamp"),
            raw=dict(raw) if isinstance(raw, Mapping) else {},
            mapping=SourceMapping.read_back(
                described.get("mapping")
            ),  # its filter decides what lambda: sinks get
            topic=kafka[0] if kafka else None,
            partition=kafka[1] if kafka else None,
            bootstrap_servers=_kafka_servers_text(described) if kafka else None,
        )
        if kafka is not None and shard != kafka_shard_id(*kafka):
            raise ValueError("range.shard_id does not match its topic and partition")
        if described.get("kind") not in (None, failure.kind.value):
            raise ValueError("range.kind does not match its stream ARN")
        if described.get("range_id") not in (None, failure.range_id):
            raise ValueError("range.range_id does not match the range")
        return failure


# Kafka's own rule for topic names (at most 249 of these characters, not "." or "..").
_KAFKA_TOPIC = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9._-]{1,249}")
_KAFKA_SERVER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?:[0-9]{1,5}")
MAX_KAFKA_SERVERS = 32
MAX_KAFKA_PARTITION = 2**31 - 1


def kafka_topic_ok(topic: str) -> bool:
    """True when `topic` is a name Kafka accepts (so it can name no path but its own folder)."""
    return topic.isascii() and _KAFKA_TOPIC.fullmatch(topic) is not None


def kafka_servers(text: str) -> tuple[str, ...] | None:
    """A `host:port,host:port` list as its servers (lower-cased, sorted, distinct); None when malformed."""
    if not text.isascii() or len(text) > 4096:
        return None
    servers = sorted({s.strip().lower() for s in text.split(",")})
    if not servers or len(servers) > MAX_KAFKA_SERVERS:
        return None
    if not all(_KAFKA_SERVER.fullmatch(s) and 0 < int(s.rpartition(":")[2]) < 65536 for s in servers):
        return None
    return tuple(servers)


def kafka_self_managed_source(servers: Sequence[str]) -> str:
    """How a self-managed cluster is named where an ARN would be: ``kafka://host:port[,host:port...]``."""
    return KAFKA_SELF_MANAGED + ",".join(servers)


def kafka_shard_id(topic: str, partition: int) -> str:
    """Where a topic-partition is written as one name: ``<topic>-<partition>``, as Lambda keys it."""
    return f"{topic}-{partition}"


def _kafka_fields(described: Mapping[str, Any], parsed: StreamArn | None) -> tuple[str, int] | None:
    """A described Kafka range's (topic, partition), checked; None when it is not a Kafka range."""
    if described.get("kind") != StreamKind.KAFKA.value:
        return None
    arn = described.get("stream_arn")
    if parsed is None and not (
        isinstance(arn, str)
        and arn.startswith(KAFKA_SELF_MANAGED)
        and kafka_servers(arn[len(KAFKA_SELF_MANAGED) :]) is not None
        and arn == kafka_self_managed_source(kafka_servers(arn[len(KAFKA_SELF_MANAGED) :]) or ())
    ):
        raise ValueError("range.stream_arn is neither an MSK cluster ARN nor a kafka:// source")
    if parsed is not None and parsed.kind is not StreamKind.KAFKA:
        raise ValueError("range.kind does not match its stream ARN")
    topic, partition = described.get("topic"), described.get("partition")
    if not isinstance(topic, str) or not kafka_topic_ok(topic):
        raise ValueError("range.topic is not a Kafka topic name")
    if (
        not isinstance(partition, int)
        or isinstance(partition, bool)
        or not 0 <= partition <= MAX_KAFKA_PARTITION
    ):
        raise ValueError("range.partition is not a partition number")
    return topic, partition


def _kafka_servers_text(described: Mapping[str, Any]) -> str | None:
    servers = described.get("bootstrap_servers")
    return servers if isinstance(servers, str) and kafka_servers(servers) is not None else None


def _optional_time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record in the exact shape a Lambda event would carry it, already serialized.

    Keeping the JSON bytes (not a dict) makes archives and invoke payloads a join of
    bytes, and keeps ten thousand records in memory cheaply.
    """

    sequence_number: str
    json: bytes

    @property
    def sequence(self) -> int:
        return int(self.sequence_number)


class RecordPage(Sequence[StreamRecord]):
    """Consecutive records held as two parallel lists, their sequence numbers and their JSON bytes.

    How readers keep a range's records: a thousand records are two lists the garbage collector
    walks at once, not a thousand objects it tracks, and none is built until one is asked for.
    Equal to any sequence of the same records.
    """

    __slots__ = ("_jsons", "_lines", "sequence_numbers")

    def __init__(self, sequence_numbers: list[str] | None = None, jsons: list[bytes] | None = None) -> None:
        self.sequence_numbers: list[str] = [] if sequence_numbers is None else sequence_numbers
        self._jsons: list[bytes] | None = [] if jsons is None else jsons
        self._lines: tuple[bytes, Sequence[int]] | None = None
        if len(self.sequence_numbers) != len(self._jsons):
            raise ValueError("a record page needs one JSON per sequence number")

    @classmethod
    def of_lines(cls, sequence_numbers: list[str], lines: bytes, ends: Sequence[int]) -> RecordPage:
        """The records of JSON Lines (each line newline-terminated; `ends[i]` is where line i ends,
        its newline included): split into records only if one is asked for."""
        if len(sequence_numbers) != len(ends) or (ends and ends[-1] != len(lines)):
            raise ValueError("a record page needs one JSON line per sequence number")
        page = cls()
        page.sequence_numbers, page._jsons, page._lines = sequence_numbers, None, (lines, ends)
        return page

    @property
    def jsons(self) -> list[bytes]:
        """The records' JSON, one bytes each (made from the lines on first use)."""
        if self._jsons is None:
            assert self._lines is not None
            lines, ends = self._lines
            starts = (0, *ends[:-1]) if ends else ()
            self._jsons = [lines[a : b - 1] for a, b in zip(starts, ends, strict=True)]
            self._lines = None
        return self._jsons

    def lines(self) -> bytes:
        """The records as JSON Lines, each newline-terminated (b"" for no records)."""
        if self._lines is not None:
            return self._lines[0]
        return b"\n".join(self._jsons or ()) + b"\n" if self._jsons else b""

    def append(self, sequence_number: str, json: bytes) -> None:
        self.sequence_numbers.append(sequence_number)
        self.jsons.append(json)

    def __len__(self) -> int:
        return len(self.sequence_numbers)

    def __iter__(self) -> Iterator[StreamRecord]:
        return map(StreamRecord, self.sequence_numbers, self.jsons)

    @overload
    def __getitem__(self, index: int) -> StreamRecord: ...
    @overload
    def __getitem__(self, index: slice) -> RecordPage: ...
    def __getitem__(self, index: int | slice) -> StreamRecord | RecordPage:
        if isinstance(index, slice):
            return RecordPage(self.sequence_numbers[index], self.jsons[index])
        return StreamRecord(self.sequence_numbers[index], self.jsons[index])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordPage):
            return self.sequence_numbers == other.sequence_numbers and self.jsons == other.jsons
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"RecordPage({list(self)!r})"


@dataclass(frozen=True, slots=True)
class Gap:
    """Records with sequence numbers in [first, last] (inclusive) were not recovered."""

    first: str
    last: str
    reason: str

    def describe(self) -> dict[str, str]:
        return {"first_sequence": self.first, "last_sequence": self.last, "reason": self.reason}


def records_lost(failure: Failure | None, recovered: int, gaps: Sequence[Gap]) -> tuple[int, bool]:
    """How many records a range lost, and whether that is only a lower bound ("at least").

    Counted only where the stream read found gaps: a message alone never moves the count.
    The batch's size bounds it (batchSize - recovered), but only within what the read
    itself establishes: at least one record per gap, at most as many as the gaps' sequence
    spans hold. Without a batch size, one per gap, "at least".
    """
    if not gaps:
        return 0, False
    floor = len(gaps)
    ceiling = sum(int(g.last) - int(g.first) + 1 for g in gaps)
    batch = failure.batch_size if failure is not None else None
    if batch is None:
        return floor, True
    told = batch - recovered
    if told < floor:  # the batch size disagrees with the read: believe the read
        return floor, True
    return min(told, ceiling), False


class OutcomeKind(StrEnum):
    REPLAYED = "replayed"  # every record delivered to every sink
    PARTIAL = "partial"  # some records lost to retention; the rest delivered; loss reported
    EXPIRED = "expired"  # every record lost to retention; loss reported
    REJECTED = "rejected"  # malformed or not allowed; never read
    RETRY = "retry"  # transient trouble; leave the message for another attempt
    CONFLICT = "conflict"  # the archive holds other content for the range; a person must look
    PLANNED = "planned"  # a dry run: what would be read and written; nothing was (never settles)
    SKIPPED = "skipped"  # not worked on, for the reason given (e.g. already re-driven; never settles)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The single answer of the core for one range (or one unparseable message)."""

    kind: OutcomeKind
    failure: Failure | None
    recovered: int = 0
    gaps: tuple[Gap, ...] = ()
    reason: str = ""
    notes: tuple[str, ...] = ()
    report_uri: str | None = None  # where the durable loss or rejection report is
    delivered_to: tuple[str, ...] = ()
    deadline: datetime | None = None  # when the range's first record leaves the stream (None: unknown/never)
    near_expiry: bool = False  # worked on within the expiry warning of its deadline, or past it

    @property
    def lost(self) -> tuple[int, bool]:
        """Records lost, and whether only "at least" that many (see `records_lost`)."""
        return records_lost(self.failure, self.recovered, self.gaps)

    @property
    def settled(self) -> bool:
        """True when the message that carried this range may be deleted.

        Replayed ranges are settled; lost records only once a durable report says so.
        """
        if self.kind is OutcomeKind.REPLAYED:
            return True
        if self.kind in (OutcomeKind.PARTIAL, OutcomeKind.EXPIRED, OutcomeKind.REJECTED):
            return self.report_uri is not None
        return False

    def describe(self) -> dict[str, Any]:
        return {
            "outcome": self.kind.value,
            "range": self.failure.describe() if self.failure else None,
            "recovered": self.recovered,
            "missing": [g.describe() for g in self.gaps],
            "reason": self.reason,
            "notes": list(self.notes),
            "report": self.report_uri,
            "delivered_to": list(self.delivered_to),
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "near_expiry": self.near_expiry,
        }
