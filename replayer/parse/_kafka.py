"""A Kafka invocation record (Amazon MSK or self-managed Apache Kafka) -> one `Failure` per partition.

Lambda's Kafka event source mappings send `KafkaBatchInfo`: the cluster (`eventSourceArn` for MSK,
`bootstrapServers` always), and `recordsInfo` keyed ``"<topic>-<partition>"`` (topic names may hold
dashes: the partition is after the last one) with the first and last offsets of each partition's
part of the batch. The Kafka-topic destination sends one record per message instead: `recordInfo`
(`offset`, `timestamp`) and the record itself in `payload`. Each partition named is its own range.

The servers a record names are kept for comparison only: what is read, and from where, is decided
by configuration (`replayer.readers.kafka`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replayer.errors import ParseError
from replayer.model import (
    MAX_KAFKA_PARTITION,
    Failure,
    StreamKind,
    kafka_self_managed_source,
    kafka_servers,
    kafka_shard_id,
    kafka_topic_ok,
    parse_stream_arn,
)
from replayer.parse._json import describe_type, loads, require_object, required, required_string, truncate
from replayer.parse._records import _batch_size as batch_size
from replayer.parse._records import _condition as condition
from replayer.parse._records import _context as context_of
from replayer.parse._records import _deeper_than as deeper_than
from replayer.parse._records import _optional_timestamp as optional_timestamp
from replayer.parse._records import _source_arn as source_arn
from replayer.parse._records import region_in_partition

__all__ = ["KAFKA_BATCH_INFO", "MAX_KAFKA_RANGES", "parse_kafka_record"]

KAFKA_BATCH_INFO = "KafkaBatchInfo"
# Partitions one record may name (each a range); Lambda's batches span few. More is not AWS's doing.
MAX_KAFKA_RANGES = 1_000
_MAX_OFFSET = 2**63 - 1
_MAX_PAYLOAD_DEPTH = 64


def parse_kafka_record(record: Mapping[str, Any], path: str, *, payloads: bool = False) -> list[Failure]:
    """A record carrying `KafkaBatchInfo` -> one Failure per topic-partition, ordered by topic and
    partition; any malformed part raises ParseError naming its path. A `payload` (S3 destination:
    the whole event; Kafka-topic destination: the one record's event) only with `payloads=True`."""
    info_path = f"{path}.{KAFKA_BATCH_INFO}"
    info = require_object(record[KAFKA_BATCH_INFO], info_path)
    context_key, origin, source_key = context_of(record, path)
    context_path = f"{path}.{context_key}"
    context = require_object(record[context_key], context_path)
    source, servers = _source(info, info_path)
    event = _payload_event(record, path, trusted=payloads)
    ranges = _ranges(info, info_path, event)
    common: dict[str, Any] = {
        "kind": StreamKind.KAFKA,
        "stream_arn": source,
        "batch_size": batch_size(info, info_path),
        "condition": condition(context, context_path),
        "origin": origin,
        "source_arn": source_arn(context, source_key, context_path),
        "timestamp": optional_timestamp(record, "timestamp", path),
        "raw": record,
        "bootstrap_servers": servers,
    }
    failures = []
    for (topic, partition), (first, last, first_time, last_time) in sorted(ranges.items()):
        payload = None
        if event is not None:
            payload = _payload_records(event, topic, partition, f"{path}.payload")
        failures.append(
            Failure(
                shard_id=kafka_shard_id(topic, partition),
                start_sequence=str(first),
                end_sequence=str(last),
                first_arrival=first_time,
                last_arrival=last_time,
                payload=payload,
                topic=topic,
                partition=partition,
                **common,
            )
        )
    return failures


def _source(info: Mapping[str, Any], path: str) -> tuple[str, str | None]:
    """The cluster as replayer names it (MSK: its ARN; self-managed: kafka://servers), and the
    record's bootstrapServers as given."""
    servers_text = info.get("bootstrapServers")
    if servers_text is not None and not isinstance(servers_text, str):
        raise ParseError(
            f"bootstrapServers must be a string, got {describe_type(servers_text)}",
            f"{path}.bootstrapServers",
        )
    servers = kafka_servers(servers_text) if servers_text is not None else None
    if servers_text is not None and servers is None:
        raise ParseError(
            f"bootstrapServers is not a list of host:port: {truncate(servers_text)!r}",
            f"{path}.bootstrapServers",
        )
    arn = info.get("eventSourceArn")
    if arn is None:
        if servers is None:
            raise ParseError(
                "has neither eventSourceArn (MSK) nor bootstrapServers (self-managed Kafka)", path
            )
        return kafka_self_managed_source(servers), servers_text
    if not isinstance(arn, str):
        raise ParseError(
            f"eventSourceArn must be a string, got {describe_type(arn)}", f"{path}.eventSourceArn"
        )
    parsed = parse_stream_arn(arn) if arn.isascii() and arn.isprintable() else None
    if parsed is None or parsed.kind is not StreamKind.KAFKA:
        raise ParseError(
            f"eventSourceArn is not an MSK cluster ARN: {truncate(arn)!r}", f"{path}.eventSourceArn"
        )
    if not region_in_partition(parsed.region, parsed.partition):
        raise ParseError(
            f"eventSourceArn names region {truncate(parsed.region)!r}, which is not a region of partition "
            f"{truncate(parsed.partition)!r}",
            f"{path}.eventSourceArn",
        )
    return arn, servers_text


_Range = tuple[int, int, Any, Any]  # first and last offsets, first and last timestamps


def _ranges(
    info: Mapping[str, Any], path: str, event: Mapping[str, Any] | None
) -> dict[tuple[str, int], _Range]:
    if "recordsInfo" in info and "recordInfo" in info:
        raise ParseError("has both recordsInfo and recordInfo; expected exactly one", path)
    if "recordInfo" in info:
        return _one_record(info, path, event)
    records_path = f"{path}.recordsInfo"
    records = require_object(required(info, "recordsInfo", path), records_path)
    if not records:
        raise ParseError("recordsInfo is empty", records_path)
    if len(records) > MAX_KAFKA_RANGES:
        raise ParseError(f"recordsInfo names more than {MAX_KAFKA_RANGES} partitions", records_path)
    ranges: dict[tuple[str, int], _Range] = {}
    for key, value in records.items():
        key_path = f"{records_path}[{truncate(key, 80)!r}]"
        where = _topic_partition(key, key_path)
        item = require_object(value, key_path)
        first = _offset(item, "firstRecordOffset", key_path)
        last = _offset(item, "lastRecordOffset", key_path)
        if first > last:
            raise ParseError(
                f"firstRecordOffset {first} is greater than lastRecordOffset {last}",
                f"{key_path}.firstRecordOffset",
            )
        ranges[where] = (
            first,
            last,
            optional_timestamp(item, "firstRecordTimestamp", key_path),
            optional_timestamp(item, "lastRecordTimestamp", key_path),
        )
    return ranges


def _one_record(
    info: Mapping[str, Any], path: str, event: Mapping[str, Any] | None
) -> dict[tuple[str, int], _Range]:
    """The Kafka-topic destination's form: one record, its topic-partition in `recordInfo` where given,
    else the only one its payload holds."""
    item_path = f"{path}.recordInfo"
    item = require_object(info["recordInfo"], item_path)
    offset = _offset(item, "offset", item_path)
    when = optional_timestamp(item, "timestamp", item_path)
    if "topic" in item or "partition" in item:
        topic = required_string(item, "topic", item_path)
        if not kafka_topic_ok(topic):
            raise ParseError(f"topic is not a Kafka topic name: {truncate(topic)!r}", f"{item_path}.topic")
        where = (topic, _partition_number(required(item, "partition", item_path), f"{item_path}.partition"))
    elif event is not None:
        keys = list(require_object(required(event, "records", "$.payload"), "$.payload.records"))
        if len(keys) != 1:
            raise ParseError("a one-record failure's payload must hold exactly one topic-partition", path)
        where = _topic_partition(keys[0], "$.payload.records")
    else:
        raise ParseError(
            "recordInfo names no topic and partition, and there is no payload to take them from", item_path
        )
    return {where: (offset, offset, when, when)}


def _topic_partition(key: str, path: str) -> tuple[str, int]:
    """``"<topic>-<partition>"``, split at the last dash (topic names may contain dashes)."""
    topic, dash, partition = key.rpartition("-")
    if not dash or not kafka_topic_ok(topic):
        raise ParseError(f"is not <topic>-<partition>: {truncate(key)!r}", path)
    try:
        return topic, _partition_number(partition, path)
    except ParseError as exc:
        raise ParseError(f"is not <topic>-<partition>: {exc.reason}", path) from None


def _partition_number(value: object, path: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and (value == "0" or value[0] != "0"):
        value = int(value) if len(value) <= 10 else -1
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_KAFKA_PARTITION:
        raise ParseError(f"the partition must be a number from 0 to {MAX_KAFKA_PARTITION}", path)
    return value


def _offset(item: Mapping[str, Any], key: str, path: str) -> int:
    """An offset, given as a JSON integer or a decimal string."""
    value = required(item, key, path)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_OFFSET:
        raise ParseError(
            f"{key} must be an offset (0 to 2^63-1), got {truncate(repr(value))}", f"{path}.{key}"
        )
    return value


def _payload_event(record: Mapping[str, Any], path: str, *, trusted: bool) -> Mapping[str, Any] | None:
    """The Kafka event an S3 or Kafka-topic destination carries (object or escaped string), or None."""
    value = record.get("payload")
    if value is None:
        return None
    payload_path = f"{path}.payload"
    if not trusted:
        raise ParseError(
            "carries an inline payload, which AWS only puts in S3 and Kafka-topic on-failure destinations: "
            "a queue or SNS message with one is forged",
            payload_path,
        )
    if isinstance(value, str):
        value = loads(value, payload_path)
    event = require_object(value, payload_path, 'a Kafka event {"records": {...}} (object or JSON string)')
    records = require_object(required(event, "records", payload_path), f"{payload_path}.records")
    if deeper_than(records, _MAX_PAYLOAD_DEPTH):
        raise ParseError(f"nested more than {_MAX_PAYLOAD_DEPTH} levels deep", f"{payload_path}.records")
    return event


def _payload_records(
    event: Mapping[str, Any], topic: str, partition: int, path: str
) -> tuple[Mapping[str, Any], ...]:
    """The payload's records of one topic-partition (none when it holds none: the topic is read then)."""
    items = event["records"].get(kafka_shard_id(topic, partition), [])
    items_path = f"{path}.records[{kafka_shard_id(topic, partition)!r}]"
    if not isinstance(items, list):
        raise ParseError(f"must be an array, got {describe_type(items)}", items_path)
    return tuple(require_object(item, f"{items_path}[{i}]") for i, item in enumerate(items))
