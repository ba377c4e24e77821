"""Invocation records (what Lambda or a pipe sends when it discards a batch) -> `Failure`s.

Every malformed input raises `replayer.errors.ParseError`, whose `path` names where.
"""

from replayer.parse._envelopes import parse_document, parse_message, s3_object_refs, sqs_messages
from replayer.parse._records import parse_record

__all__ = ["parse_document", "parse_message", "parse_record", "s3_object_refs", "sqs_messages"]
