"""Where malformed and not-allowed messages go, with the reason, before they are deleted.

`s3://BUCKET[/PREFIX]` keeps one JSON document per message (create-only: a second
attempt finds it there); an SQS queue URL gets the body, with the reason and the source
message id as message attributes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from replayer.archive.store import S3Store, StoreError
from replayer.aws import Clients, SqsQueue, error_code
from replayer.config import quarantine_problem
from replayer.errors import ConfigError

__all__ = ["Quarantine", "QuarantineError", "S3Quarantine", "SqsQuarantine", "quarantine_from_uri"]

_MAX_ATTRIBUTE_CHARS = 4096  # reasons are short; a bound keeps a hostile body from growing them
_SQS_MAX_BODY = 262_144


class QuarantineError(Exception):
    """The message could not be quarantined: it stays on the queue."""


class Quarantine(Protocol):
    @property
    def uri(self) -> str: ...

    async def put(self, body: str, reason: str, message_id: str, source: str) -> str:
        """Keep `body` with `reason`; return where it went. Raises QuarantineError."""
        ...


def _now() -> datetime:
    return datetime.now(UTC)


class S3Quarantine:
    def __init__(self, clients: Clients, bucket: str, prefix: str = "") -> None:
        self.store = S3Store(clients, bucket, prefix)

    @property
    def uri(self) -> str:
        return self.store.uri

    def key(self, body: str, message_id: str, when: datetime) -> str:
        """The key below the prefix: derived from the message, never chosen by it (a digest)."""
        digest = hashlib.sha256(f"{message_id}\n{body}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{when:%Y/%m/%d}/{digest}.json"

    async def put(self, body: str, reason: str, message_id: str, source: str) -> str:
        when = _now()
        key = self.key(body, message_id, when)
        document = {
            "reason": reason,
            "message_id": message_id,
            "source": source,
            "quarantined_at": when.isoformat(),
            "body": body,
        }
        try:
            # create-only: a second attempt for the same message finds it there
            await self.store.create(
                key, json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
            )
        except StoreError as exc:
            raise QuarantineError(str(exc)) from exc
        return self.store.location(key)


class SqsQuarantine:
    def __init__(self, clients: Clients, queue_url: str) -> None:
        self._clients = clients
        self.queue_url = queue_url

    @property
    def uri(self) -> str:
        return self.queue_url

    async def put(self, body: str, reason: str, message_id: str, source: str) -> str:
        queue = await SqsQueue.open(self._clients, self.queue_url)
        attributes = {
            "replayer-reason": {"DataType": "String", "StringValue": reason[:_MAX_ATTRIBUTE_CHARS] or "-"},
            "replayer-source-message-id": {"DataType": "String", "StringValue": message_id or "-"},
            "replayer-source": {"DataType": "String", "StringValue": source or "-"},
        }
        # SQS refuses bodies it cannot carry (over 256 KiB, some control characters):
        # then the body goes as JSON text, which SQS always accepts, and says so.
        payload = body
        if len(body.encode("utf-8", "surrogatepass")) > _SQS_MAX_BODY - 1024 or not body:
            raise QuarantineError(f"{self.queue_url}: body of {len(body)} characters cannot be sent to SQS")
        try:
            message_id = await queue.send(payload, attributes)
        except ClientError as exc:
            if error_code(exc) not in ("InvalidMessageContents", "InvalidParameterValue"):
                raise QuarantineError(f"{self.queue_url}: {error_code(exc) or exc}") from exc
            attributes["replayer-body-encoding"] = {"DataType": "String", "StringValue": "json-string"}
            try:
                message_id = await queue.send(json.dumps(body), attributes)
            except (ClientError, BotoCoreError) as again:
                raise QuarantineError(f"{self.queue_url}: {again}") from again
        except BotoCoreError as exc:
            raise QuarantineError(f"{self.queue_url}: {exc}") from exc
        return f"{self.queue_url}#{message_id}"


def quarantine_from_uri(uri: str, clients: Clients) -> Quarantine:
    """The quarantine a `--quarantine` value names, or ConfigError."""
    problem = quarantine_problem(uri)
    if problem:
        raise ConfigError(f"--quarantine {problem}")
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        return S3Quarantine(clients, bucket, prefix)
    return SqsQuarantine(clients, uri)
