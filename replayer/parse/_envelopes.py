"""The wrappers an invocation record arrives in: files, SQS bodies, SNS notifications, Lambda events.

Each envelope is peeled by one small function; `parse_message` detects which applies and
recurses (boundedly) until it reaches invocation records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from replayer.errors import ParseError
from replayer.model import Failure
from replayer.parse._json import (
    ExtraDataError,
    decode_text,
    describe_type,
    keys_seen,
    loads,
    loads_str,
    require_object,
    required,
    required_string,
    truncate,
)
from replayer.parse._kafka import KAFKA_BATCH_INFO, parse_kafka_record
from replayer.parse._records import BATCH_INFO_KINDS, looks_like_record, parse_record

__all__ = [
    "MAX_ENVELOPE_DEPTH",
    "S3_EVENT",
    "SNS_EVENT",
    "SQS_EVENT",
    "event_records",
    "event_source",
    "parse_document",
    "parse_message",
    "s3_object_refs",
    "s3_objects",
    "sqs_messages",
    "sqs_record",
]

# SNS notification inside an SQS body inside an SQS Lambda event is 3; more is not AWS's doing.
MAX_ENVELOPE_DEPTH = 4
SQS_EVENT = _SQS = "aws:sqs"
SNS_EVENT = _SNS = "aws:sns"
S3_EVENT = _S3 = "aws:s3"
_MAX_MESSAGE_ID_CHARS = 256
_MAX_S3_KEY_BYTES = 1024
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_document(
    text: str | bytes,
    path: str = "<input>",
    *,
    payloads: bool = False,
    errors: list[ParseError] | None = None,
) -> list[Failure]:
    """A file's content -> its failures, in order.

    The content is one JSON message, a JSON array of messages, or JSON Lines (one message
    a line, blank lines ignored); each message goes through `parse_message`. Error paths
    name the element (``<input>[3]...``) or the line (``<input>:7.$...``). `payloads` as
    for `parse_message` (a file the operator names is trusted with them).

    `errors`: when given, an element or line that does not parse is appended to it and the
    others are still parsed (each input its own outcome); otherwise the first one raises.
    """
    body = decode_text(text, path)
    if not body.strip():
        return []
    try:
        value = loads_str(body, path)
    except ExtraDataError:
        return _json_lines(body, path, payloads, errors)
    except ParseError:
        if _looks_like_json_lines(body):  # JSON Lines whose first line is broken
            return _json_lines(body, path, payloads, errors)
        raise
    if isinstance(value, list):
        return [
            failure
            for i, item in enumerate(value)
            for failure in _part(item, f"{path}[{i}]", payloads, errors)
        ]
    return parse_message(value, path, payloads=payloads)


def _part(message: object, path: str, payloads: bool, errors: list[ParseError] | None) -> list[Failure]:
    """One element or line of a document; its ParseError collected in `errors` when given."""
    if errors is None:
        return _message(message, path, 0, payloads=payloads)
    try:
        return _message(message, path, 0, payloads=payloads)
    except ParseError as exc:
        errors.append(exc)
        return []


def _looks_like_json_lines(body: str) -> bool:
    """Several lines, one of which is a whole JSON object by itself (a pretty-printed document's are not)."""
    lines = [line for line in body.split("\n") if line.strip()]
    if len(lines) < 2:
        return False
    for line in lines:
        try:
            if isinstance(loads_str(line, "$"), Mapping):
                return True
        except ParseError:
            continue
    return False


def _json_lines(body: str, path: str, payloads: bool, errors: list[ParseError] | None) -> list[Failure]:
    # Split on "\n" only: str.splitlines would also split on U+2028 and friends, legal inside JSON strings.
    failures: list[Failure] = []
    for number, line in enumerate(body.split("\n"), start=1):
        if line.strip():
            failures += _part(line, f"{path}:{number}.$", payloads, errors)
    return failures


def parse_message(
    message: str | bytes | Mapping[str, Any], path: str = "$", *, payloads: bool = False
) -> list[Failure]:
    """One message as it arrives anywhere -> the failures it holds.

    Detected forms: a bare invocation record; JSON text of any form (an SQS body); an SNS
    notification (``Type: Notification``, SNS -> SQS without raw delivery); an SNS Lambda
    event (``Records[].Sns.Message``); an SQS Lambda event (``Records[].body``). Envelopes
    may nest up to `MAX_ENVELOPE_DEPTH` deep.

    `payloads`: the source vouches for inline ``payload``s (an S3 on-failure destination
    object from a configured bucket, a file named by the operator). Otherwise, and always
    inside an SQS or SNS envelope, a record carrying one is a ParseError: AWS never puts
    one there, so it can only be forged.
    """
    return _message(message, path, 0, payloads=payloads)


def _message(message: object, path: str, depth: int, *, payloads: bool = False) -> list[Failure]:
    if depth > MAX_ENVELOPE_DEPTH:
        raise ParseError(f"envelopes nested more than {MAX_ENVELOPE_DEPTH} deep", path)
    obj = _as_object(message, path)
    if looks_like_record(obj):
        return _invocation_record(obj, path, payloads)
    if _is_sns_notification(obj):
        return _message(_sns_notification_message(obj, path), f"{path}.Message", depth + 1)
    if "Records" in obj:
        return _event_records(obj, path, depth)
    _reject_other_sns_message(obj, path)
    raise ParseError(
        "unknown message: not an invocation record, SNS notification, SNS event or SQS event; "
        f"keys seen: {keys_seen(obj)}",
        path,
    )


def _invocation_record(record: Mapping[str, Any], path: str, payloads: bool) -> list[Failure]:
    """A stream's record is one range; a Kafka record, one range per topic-partition it names."""
    if KAFKA_BATCH_INFO not in record:
        return [parse_record(record, path, payloads=payloads)]
    if any(key in record for key in BATCH_INFO_KINDS):
        raise ParseError(f"has both {KAFKA_BATCH_INFO} and a stream's batch info; expected exactly one", path)
    return parse_kafka_record(record, path, payloads=payloads)


def _as_object(message: object, path: str) -> Mapping[str, Any]:
    """A message given as JSON text (an SQS body, an SNS Message) or already decoded."""
    if isinstance(message, str | bytes | bytearray):
        message = loads(message, path)
    return require_object(message, path)


def _event_records(event: Mapping[str, Any], path: str, depth: int) -> list[Failure]:
    failures: list[Failure] = []
    for item_path, record in _records(event, path):
        source = _event_source(record)
        if source == _SNS:
            failures += _message(
                _sns_record_message(record, item_path), f"{item_path}.Sns.Message", depth + 1
            )
        elif source == _SQS:
            failures += _message(_sqs_body(record, item_path), f"{item_path}.body", depth + 1)
        else:
            raise ParseError(_not_an_envelope(source), item_path)
    return failures


def _not_an_envelope(source: str | None) -> str:
    if source == _S3:
        return "an S3 event notification record: read the objects it names (s3_object_refs)"
    if source in ("aws:dynamodb", "aws:kinesis"):
        return f"a {source} stream event record, not an invocation record"
    shown = "missing" if source is None else repr(truncate(source, 40))
    return f"not an SNS or SQS event record (event source {shown})"


# ---- Lambda event records (SNS, SQS, S3): shared quirks


def _records(event: Mapping[str, Any], path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The (path, record) pairs of a Lambda event's non-empty ``Records`` array."""
    records = required(event, "Records", path)
    records_path = f"{path}.Records"
    if not isinstance(records, list):
        raise ParseError(f"Records must be an array, got {describe_type(records)}", records_path)
    if not records:
        raise ParseError("Records is empty", records_path)
    return [
        (f"{records_path}[{i}]", require_object(item, f"{records_path}[{i}]"))
        for i, item in enumerate(records)
    ]


def event_records(event: Mapping[str, Any], path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The (path, record) pairs of a Lambda event's non-empty ``Records`` array."""
    return _records(event, path)


def event_source(event: Mapping[str, Any]) -> str | None:
    """`aws:sqs`, `aws:sns` or `aws:s3` from a Lambda event's first record (None when unknown)."""
    if _is_s3_test_event(event):
        return _S3
    records = event.get("Records")
    if not isinstance(records, list) or not records or not isinstance(records[0], Mapping):
        return None
    return _event_source(records[0])


def _event_source(record: Mapping[str, Any]) -> str | None:
    # SQS and S3 records spell it eventSource, SNS records EventSource.
    for key in ("eventSource", "EventSource"):
        value = record.get(key)
        if isinstance(value, str):
            return value
    return None


# ---- SNS


def _is_sns_notification(obj: Mapping[str, Any]) -> bool:
    return obj.get("Type") == "Notification"


def _sns_notification_message(notification: Mapping[str, Any], path: str) -> str:
    return required_string(notification, "Message", path)


def _reject_other_sns_message(obj: Mapping[str, Any], path: str) -> None:
    kind = obj.get("Type")
    if isinstance(kind, str) and "TopicArn" in obj:
        raise ParseError(f"an SNS {truncate(kind, 40)!r} message, not a Notification", f"{path}.Type")


def _sns_record_message(record: Mapping[str, Any], path: str) -> str:
    sns = require_object(required(record, "Sns", path), f"{path}.Sns")
    return required_string(sns, "Message", f"{path}.Sns")


# ---- SQS


def _sqs_body(record: Mapping[str, Any], path: str) -> str:
    return required_string(record, "body", path)


def _sqs_message_id(record: Mapping[str, Any], path: str) -> str:
    message_id = required_string(record, "messageId", path)
    if not message_id or len(message_id) > _MAX_MESSAGE_ID_CHARS:
        raise ParseError(f"messageId must be 1 to {_MAX_MESSAGE_ID_CHARS} characters", f"{path}.messageId")
    return message_id


def sqs_messages(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An SQS event delivered to a Lambda -> its ``(messageId, body)`` pairs, in order.

    Raises ParseError when `event` is not such an event (every record must have
    ``eventSource == "aws:sqs"``).
    """
    obj = require_object(event, "$", "an SQS event (a JSON object)")
    return [sqs_record(record, path) for path, record in _records(obj, "$")]


def sqs_record(record: Mapping[str, Any], path: str) -> tuple[str, str]:
    """One record of an SQS Lambda event -> ``(messageId, body)``; ParseError unless it is one."""
    _require_source(record, _SQS, path)
    return _sqs_message_id(record, path), _sqs_body(record, path)


def _require_source(record: Mapping[str, Any], expected: str, path: str) -> None:
    source = _event_source(record)
    if source != expected:
        shown = "missing" if source is None else repr(truncate(source, 40))
        raise ParseError(f"expected eventSource {expected!r}, got {shown}", f"{path}.eventSource")


# ---- S3 event notifications


def s3_object_refs(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An S3 event notification delivered to a Lambda -> ``(bucket, key)`` pairs, keys URL-decoded.

    Only ``ObjectCreated:*`` records name objects to read; other records (removals) are skipped,
    and S3's ``s3:TestEvent`` yields no objects. Raises ParseError when `event` is not an
    S3 event notification.
    """
    return [(bucket, key) for bucket, key, _ in s3_objects(event)]


def s3_objects(event: Mapping[str, Any]) -> list[tuple[str, str, int | None]]:
    """`s3_object_refs` with each object's size as the event gives it (None when absent)."""
    obj = require_object(event, "$", "an S3 event notification (a JSON object)")
    if _is_s3_test_event(obj):
        return []
    objects: list[tuple[str, str, int | None]] = []
    for path, record in _records(obj, "$"):
        _require_source(record, _S3, path)
        if _is_object_created(record):
            bucket, key = _s3_object_ref(record, path)
            objects.append((bucket, key, _s3_object_size(record)))
    return objects


def _s3_object_size(record: Mapping[str, Any]) -> int | None:
    s3 = record.get("s3")
    s3_object = s3.get("object") if isinstance(s3, Mapping) else None
    size = s3_object.get("size") if isinstance(s3_object, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _is_s3_test_event(obj: Mapping[str, Any]) -> bool:
    # Sent once when a notification is configured; it has no Records.
    return obj.get("Event") == "s3:TestEvent" and "Records" not in obj


def _is_object_created(record: Mapping[str, Any]) -> bool:
    name = record.get("eventName")
    return not isinstance(name, str) or name.startswith("ObjectCreated:")


def _s3_object_ref(record: Mapping[str, Any], path: str) -> tuple[str, str]:
    s3_path = f"{path}.s3"
    s3 = require_object(required(record, "s3", path), s3_path)
    bucket = require_object(required(s3, "bucket", s3_path), f"{s3_path}.bucket")
    name = required_string(bucket, "name", f"{s3_path}.bucket")
    if not _BUCKET_NAME.fullmatch(name):
        raise ParseError(f"not an S3 bucket name: {truncate(name)!r}", f"{s3_path}.bucket.name")
    s3_object = require_object(required(s3, "object", s3_path), f"{s3_path}.object")
    key = required_string(s3_object, "key", f"{s3_path}.object")
    return name, _decode_s3_key(key, f"{s3_path}.object.key")


def _decode_s3_key(key: str, path: str) -> str:
    """S3 event keys are form-encoded: '+' for a space, %XX (UTF-8) for the rest."""
    try:
        decoded = unquote_plus(key, errors="strict")
    except UnicodeDecodeError:
        raise ParseError(f"key has a %-escape that is not UTF-8: {truncate(key)!r}", path) from None
    if not decoded:
        raise ParseError("key is empty", path)
    try:
        size = len(decoded.encode())
    except UnicodeEncodeError:  # a lone surrogate, from a \ud800-style JSON escape
        raise ParseError(f"key is not valid Unicode: {truncate(key)!r}", path) from None
    if size > _MAX_S3_KEY_BYTES:
        raise ParseError(f"key is longer than {_MAX_S3_KEY_BYTES} bytes", path)
    return decoded
