"""Invocation records (what Lambda or a pipe sends when it discards a batch) -> `Failure`s,
and the Lambda events and queue messages they arrive in -> typed `Message`s.

Every malformed input raises `replayer.errors.ParseError`, whose `path` names where.
"""

from replayer.parse._envelopes import parse_document, parse_message, s3_object_refs, sqs_messages
from replayer.parse._lambda import LambdaEvent, Message, S3Object, lambda_event, queue_message
from replayer.parse._records import parse_record

__all__ = [
    "LambdaEvent",
    "Message",
    "S3Object",
    "lambda_event",
    "parse_document",
    "parse_message",
    "parse_record",
    "queue_message",
    "s3_object_refs",
    "sqs_messages",
]
