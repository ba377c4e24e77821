"""One invocation record (the metadata Lambda or a pipe sends on failure) -> a `Failure`.

Each wire quirk lives in one small function below; `parse_record` only composes them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from replayer.errors import ParseError
from replayer.model import Failure, Origin, StreamKind, parse_stream_arn
from replayer.parse._json import (
    describe_type,
    keys_seen,
    loads,
    require_object,
    required,
    required_string,
    truncate,
)

__all__ = ["BATCH_INFO_KINDS", "MAX_BATCH_SIZE", "looks_like_record", "parse_record"]

BATCH_INFO_KINDS: Mapping[str, StreamKind] = {
    "DDBStreamBatchInfo": StreamKind.DYNAMODB,
    "KinesisBatchInfo": StreamKind.KINESIS,
}
# requestContext: a Lambda event source mapping; context: an EventBridge pipe (it has no requestContext).
_CONTEXTS: tuple[tuple[str, Origin, str], ...] = (
    ("requestContext", Origin.LAMBDA_ESM, "functionArn"),
    ("context", Origin.PIPES, "partnerResourceArn"),
)
MAX_BATCH_SIZE = 10_000
_MAX_SEQUENCE_DIGITS = 128
# What AWS accepts (API references of GetShardIterator): anything else can never be read, so it
# is rejected at parse time rather than retried until the dead-letter queue.
_SHARD_ID_LENGTHS = {StreamKind.DYNAMODB: (28, 65), StreamKind.KINESIS: (1, 128)}
_SEQUENCE_DIGITS = {StreamKind.DYNAMODB: (21, 40), StreamKind.KINESIS: (1, 128)}
# Payload records must serialise again (orjson stops at 255 levels); Lambda events are shallow.
_MAX_PAYLOAD_DEPTH = 64
_MAX_CONDITION_CHARS = 256

# fullmatch and explicit [0-9]: `\d` would take non-ASCII digits and `$` a trailing newline.
_SHARD_ID = re.compile(r"shardId-[A-Za-z0-9_-]{1,80}")
_SEQUENCE_NUMBER = re.compile(rf"[0-9]{{1,{_MAX_SEQUENCE_DIGITS}}}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:?[0-9]{2})"
)
_SOURCE_ARN = re.compile(r"arn:[a-z0-9-]{1,32}:[a-z0-9-]{1,64}:[a-z0-9-]{0,64}:[0-9]{12}:[!-~]{1,1024}")


def looks_like_record(obj: Mapping[str, Any]) -> bool:
    """True when `obj` has a key only invocation records have (so errors speak of records)."""
    keys = (*BATCH_INFO_KINDS, "KafkaBatchInfo", "requestContext", "responseContext", "context")
    return any(key in obj for key in keys)


def parse_record(obj: object, path: str = "$", *, payloads: bool = False) -> Failure:
    """One invocation record -> a `Failure`; any malformed part raises ParseError naming its path.

    Accepts the Lambda event source mapping form (requestContext, responseContext), the
    EventBridge Pipes dead-letter form (context.partnerResourceArn) and the S3 destination
    form (either of those plus "payload", the original event as a JSON string or object).
    A "payload" is accepted only with `payloads=True` (the source vouches for it: see
    `parse_message`); otherwise it is a ParseError.
    """
    record = require_object(obj, path, "an invocation record (a JSON object)")
    info_key, kind = _batch_info(record, path)
    info_path = f"{path}.{info_key}"
    info = require_object(record[info_key], info_path)
    context_key, origin, source_key = _context(record, path)
    context_path = f"{path}.{context_key}"
    context = require_object(record[context_key], context_path)
    stream_arn = _stream_arn(info, kind, info_path)
    shard_id = _shard_id(info, kind, info_path)
    start = _sequence_number(info, "startSequenceNumber", kind, info_path)
    end = _sequence_number(info, "endSequenceNumber", kind, info_path)
    _check_range(start, end, info_path)
    return Failure(
        kind=kind,
        stream_arn=stream_arn,
        shard_id=shard_id,
        start_sequence=start,
        end_sequence=end,
        batch_size=_batch_size(info, info_path),
        first_arrival=_optional_timestamp(info, "approximateArrivalOfFirstRecord", info_path),
        last_arrival=_optional_timestamp(info, "approximateArrivalOfLastRecord", info_path),
        condition=_condition(context, context_path),
        origin=origin,
        source_arn=_source_arn(context, source_key, context_path),
        timestamp=_optional_timestamp(record, "timestamp", path),
        raw=record,
        payload=_payload(record, path, trusted=payloads),
    )


def _batch_info(record: Mapping[str, Any], path: str) -> tuple[str, StreamKind]:
    present = [key for key in BATCH_INFO_KINDS if key in record]
    if len(present) > 1:
        raise ParseError("has both DDBStreamBatchInfo and KinesisBatchInfo; expected exactly one", path)
    if not present:
        hint = (
            " (an asynchronous-invocation record, not a stream batch)" if "requestPayload" in record else ""
        )
        raise ParseError(
            f"has neither DDBStreamBatchInfo nor KinesisBatchInfo{hint}; keys seen: {keys_seen(record)}", path
        )
    return present[0], BATCH_INFO_KINDS[present[0]]


def _context(record: Mapping[str, Any], path: str) -> tuple[str, Origin, str]:
    for key, origin, source_key in _CONTEXTS:
        if key in record:
            return key, origin, source_key
    raise ParseError("has neither requestContext (Lambda) nor context (EventBridge Pipes)", path)


def _optional(obj: Mapping[str, Any], key: str) -> Any:
    """The value at `key`, with JSON null treated as absent."""
    return obj.get(key)


def _stream_arn(info: Mapping[str, Any], kind: StreamKind, path: str) -> str:
    arn = required_string(info, "streamArn", path)
    parsed = parse_stream_arn(arn) if _is_plain_ascii(arn) else None
    if parsed is None or _dots_only(parsed.name) or (parsed.label is not None and _dots_only(parsed.label)):
        raise ParseError(
            f"streamArn is not a DynamoDB or Kinesis stream ARN: {truncate(arn)!r}", f"{path}.streamArn"
        )
    if parsed.kind is not kind:
        raise ParseError(
            f"streamArn is a {parsed.kind.value} stream but the record carries {kind.value} batch info",
            f"{path}.streamArn",
        )
    if not region_in_partition(parsed.region, parsed.partition):
        raise ParseError(
            f"streamArn names region {truncate(parsed.region)!r}, which is not a region of partition "
            f"{truncate(parsed.partition)!r}",
            f"{path}.streamArn",
        )
    return arn


@functools.cache
def _partition_regions() -> dict[str, re.Pattern[str]]:
    """Each AWS partition's region pattern, from botocore's endpoint data (loaded once, when needed)."""
    from replayer.aws import sdk_loader  # the process's one copy, shared with the SDK's sessions

    partitions = sdk_loader().load_data("endpoints")["partitions"]
    return {p["partition"]: re.compile(p["regionRegex"].rstrip("$")) for p in partitions}


def region_in_partition(region: str, partition: str) -> bool:
    """True when `region` is named as AWS names regions of `partition` (botocore's own rule)."""
    pattern = _partition_regions().get(partition)
    return pattern is not None and region.isascii() and pattern.fullmatch(region) is not None


def _is_plain_ascii(text: str) -> bool:
    # The stream ARN patterns use `\d` and `$`, which also let in non-ASCII digits and a final newline.
    return text.isascii() and text.isprintable()


def _dots_only(name: str) -> bool:
    # "." and ".." pass the ARN patterns but would climb directories in an archive key.
    return name.strip(".") == ""


def _shard_id(info: Mapping[str, Any], kind: StreamKind, path: str) -> str:
    shard_id = required_string(info, "shardId", path)
    if not _SHARD_ID.fullmatch(shard_id):
        raise ParseError(f"shardId is not a shard id: {truncate(shard_id)!r}", f"{path}.shardId")
    low, high = _SHARD_ID_LENGTHS[kind]
    if not low <= len(shard_id) <= high:
        raise ParseError(
            f"shardId of a {kind.value} stream is {low} to {high} characters long, got {len(shard_id)} "
            "(AWS accepts no other)",
            f"{path}.shardId",
        )
    return shard_id


def _sequence_number(info: Mapping[str, Any], key: str, kind: StreamKind, path: str) -> str:
    """A sequence number as its decimal string; JSON integers are accepted and converted."""
    value = required(info, key, path)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 10**_MAX_SEQUENCE_DIGITS:
            raise ParseError(
                f"{key} must be a non-negative number of at most {_MAX_SEQUENCE_DIGITS} digits",
                f"{path}.{key}",
            )
        value = str(value)
    if not isinstance(value, str):
        raise ParseError(f"{key} must be a decimal string, got {describe_type(value)}", f"{path}.{key}")
    if not _SEQUENCE_NUMBER.fullmatch(value):
        raise ParseError(
            f"{key} must be 1 to {_MAX_SEQUENCE_DIGITS} decimal digits, got {truncate(value)!r}",
            f"{path}.{key}",
        )
    low, high = _SEQUENCE_DIGITS[kind]
    if not low <= len(value) <= high:
        raise ParseError(
            f"{key} of a {kind.value} stream is {low} to {high} digits long, got {len(value)}: "
            f"{truncate(value)!r} (AWS accepts no other)",
            f"{path}.{key}",
        )
    return value


def _check_range(start: str, end: str, path: str) -> None:
    if int(start) > int(end):
        raise ParseError(
            f"startSequenceNumber {start} is greater than endSequenceNumber {end}",
            f"{path}.startSequenceNumber",
        )


def _batch_size(info: Mapping[str, Any], path: str) -> int | None:
    value = _optional(info, "batchSize")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParseError(f"batchSize must be an integer, got {describe_type(value)}", f"{path}.batchSize")
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ParseError(
            f"batchSize must be between 1 and {MAX_BATCH_SIZE}, got {value}", f"{path}.batchSize"
        )
    return value


def _optional_timestamp(obj: Mapping[str, Any], key: str, path: str) -> datetime | None:
    """An ISO 8601 time with a zone (Z or offset), with or without fractions, as an aware UTC datetime."""
    value = _optional(obj, key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{key} must be an ISO 8601 string, got {describe_type(value)}", f"{path}.{key}")
    if not _TIMESTAMP.fullmatch(value):
        raise ParseError(
            f"{key} is not an ISO 8601 time with a zone (e.g. 2019-11-14T00:13:49.717Z): {truncate(value)!r}",
            f"{path}.{key}",
        )
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ParseError(f"{key} is not a valid time: {truncate(value)!r} ({exc})", f"{path}.{key}") from None


def _condition(context: Mapping[str, Any], path: str) -> str | None:
    # Unknown conditions (e.g. emulators' MaxRecordAgeExceeded) are data; only the shape is checked.
    value = _optional(context, "condition")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"condition must be a string, got {describe_type(value)}", f"{path}.condition")
    if len(value) > _MAX_CONDITION_CHARS or not value.isprintable():
        raise ParseError(
            f"condition must be printable text of at most {_MAX_CONDITION_CHARS} characters",
            f"{path}.condition",
        )
    return value


def _source_arn(context: Mapping[str, Any], key: str, path: str) -> str | None:
    value = _optional(context, key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{key} must be a string, got {describe_type(value)}", f"{path}.{key}")
    if not _SOURCE_ARN.fullmatch(value):
        raise ParseError(f"{key} is not an ARN: {truncate(value)!r}", f"{path}.{key}")
    return value


def _payload(record: Mapping[str, Any], path: str, *, trusted: bool) -> tuple[Mapping[str, Any], ...] | None:
    """The S3 destination's copy of the original event: its records, or None when absent.

    Empty is allowed here: the reader finds it disagrees with the range and reads the stream.
    """
    value = _optional(record, "payload")
    if value is None:
        return None
    payload_path = f"{path}.payload"
    if not trusted:
        raise ParseError(
            "carries an inline payload, which AWS only puts in S3 on-failure destination objects: "
            "a queue or SNS message with one is forged (only objects from a configured failure bucket "
            "and files named on the command line may bring their records)",
            payload_path,
        )
    if isinstance(value, str):  # the documented form: the event as an escaped JSON string
        value = loads(value, payload_path)
    event = require_object(value, payload_path, 'a {"Records": [...]} event (object or JSON string)')
    records = required(event, "Records", payload_path)
    records_path = f"{payload_path}.Records"
    if not isinstance(records, list):
        raise ParseError(f"Records must be an array, got {describe_type(records)}", records_path)
    items = tuple(require_object(item, f"{records_path}[{i}]") for i, item in enumerate(records))
    for i, item in enumerate(items):
        if _deeper_than(item, _MAX_PAYLOAD_DEPTH):
            raise ParseError(f"nested more than {_MAX_PAYLOAD_DEPTH} levels deep", f"{records_path}[{i}]")
    return items


def _deeper_than(value: object, limit: int) -> bool:
    """True when `value` nests objects/arrays more than `limit` levels (iteratively: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return False
