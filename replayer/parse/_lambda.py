"""What a Lambda event or a ReceiveMessage answer hands over, as typed messages to settle.

SQS records keep their receipt, receive count and queue URL; SNS records their message;
S3 event notifications name objects (bucket, key, size) that the runtime reads. The
bodies themselves are parsed later, one by one, by `parse_message`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from replayer.errors import ParseError
from replayer.parse._envelopes import (
    S3_EVENT,
    SNS_EVENT,
    SQS_EVENT,
    event_records,
    event_source,
    s3_objects,
    sqs_record,
)
from replayer.parse._json import require_object

__all__ = ["LambdaEvent", "Message", "S3Object", "lambda_event", "queue_message"]

_SQS_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):sqs:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):(?P<name>[A-Za-z0-9_.-]{1,80})"
)


@dataclass(frozen=True, slots=True)
class Message:
    """One unit to settle: an SQS message, an SNS record or an S3 object's content.

    `receipt` and `queue_url` are set for SQS messages (None otherwise); `parse_error`
    when the unit is malformed before its body could even be read.
    """

    id: str
    body: str
    receipt: str | None = None
    receive_count: int = 1
    queue_url: str | None = None
    parse_error: str | None = None


@dataclass(frozen=True, slots=True)
class S3Object:
    """An object an S3 event notification names; `size` as the event says (None: not given)."""

    bucket: str
    key: str
    size: int | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class LambdaEvent:
    """A Lambda event: its source (`aws:sqs`, `aws:sns` or `aws:s3`) and what it carries."""

    source: str
    messages: tuple[Message, ...] = ()
    objects: tuple[S3Object, ...] = ()


def lambda_event(event: object) -> LambdaEvent:
    """An SQS, SNS or S3-notification Lambda event -> its messages (or objects), in order.

    Raises ParseError for anything else, or a malformed SQS or S3 event (a bug upstream:
    Lambda retries the whole batch). A malformed SNS record becomes a message with a
    `parse_error`, so it is quarantined rather than retried.
    """
    obj = require_object(event, "$", "a Lambda event (a JSON object)")
    source = event_source(obj)
    if source == SQS_EVENT:
        return LambdaEvent(
            source, messages=tuple(_sqs_message(record, path) for path, record in event_records(obj, "$"))
        )
    if source == SNS_EVENT:
        return LambdaEvent(
            source,
            messages=tuple(_sns_message(i, record) for i, (_, record) in enumerate(event_records(obj, "$"))),
        )
    if source == S3_EVENT:
        return LambdaEvent(source, objects=tuple(S3Object(b, k, size) for b, k, size in s3_objects(obj)))
    raise ParseError(f"not an SQS, SNS or S3 event (event source {source or 'missing'})", "$")


def _sqs_message(record: Mapping[str, Any], path: str) -> Message:
    message_id, body = sqs_record(record, path)
    attributes = record.get("attributes")
    count = attributes.get("ApproximateReceiveCount") if isinstance(attributes, Mapping) else None
    receipt = record.get("receiptHandle")
    return Message(
        message_id,
        body,
        receipt=receipt if isinstance(receipt, str) and receipt else None,
        receive_count=_count(count),
        queue_url=_queue_url(record.get("eventSourceARN")),
    )


def _sns_message(index: int, record: Mapping[str, Any]) -> Message:
    sns = record.get("Sns")
    message_id = sns.get("MessageId") if isinstance(sns, Mapping) else None
    if not isinstance(message_id, str) or not message_id:
        message_id = f"record-{index}"
    body = sns.get("Message") if isinstance(sns, Mapping) else None
    if not isinstance(body, str):
        return Message(message_id, "", parse_error=f"$.Records[{index}].Sns.Message: missing or not a string")
    return Message(message_id, body)


def queue_message(raw: Mapping[str, Any]) -> Message:
    """One message of a ReceiveMessage answer -> a `Message` (its receipt is required)."""
    attributes = raw.get("Attributes")
    count = attributes.get("ApproximateReceiveCount") if isinstance(attributes, Mapping) else None
    return Message(
        id=str(raw.get("MessageId", "")),
        body=str(raw.get("Body", "")),
        receipt=str(raw["ReceiptHandle"]),
        receive_count=_count(count),
    )


def _count(value: object) -> int:
    """An ApproximateReceiveCount (a decimal string); 1 when missing or not a number."""
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else 1


def _queue_url(arn: object) -> str | None:
    """The queue URL of an SQS queue ARN (the endpoint override, if any, still decides where calls go)."""
    if not isinstance(arn, str) or not (m := _SQS_ARN.fullmatch(arn)):
        return None
    return f"https://sqs.{m['region']}.amazonaws.com/{m['account']}/{m['name']}"
