"""The one place that creates AWS clients.

Clients are created once per (service, region), reused for the life of the process and
closed together. Region, credentials and endpoint come from the standard AWS
environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles); retries of throttling and 5xx
are botocore's own (standard mode), so no other layer retries the same call.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

__all__ = ["Clients", "RAW_BODY", "SqsQueue", "default_region", "error_code"]

# Key under which a raw JSON response body is handed back for the operations below.
RAW_BODY = "ReplayerRawBody"

# GetRecords answers are parsed by us, not botocore: its parser costs several times what
# json.loads does, and the raw JSON is already the shape a Lambda event carries
# (attribute values as on the wire, epoch-second timestamps, base64 binaries).
_RAW_OPERATIONS = (
    "before-parse.dynamodb-streams.GetRecords",
    "before-parse.kinesis.GetRecords",
)


# A synchronous Invoke answers when the function returns, up to its 900 s timeout: a shorter
# read timeout would make botocore re-send the Invoke while the first call is still running.
_SERVICE_CONFIG = {"lambda": Config(read_timeout=910)}


def _keep_raw_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    if response_dict.get("status_code") == 200 and isinstance(response_dict.get("body"), bytes):
        customized_response_dict[RAW_BODY] = response_dict["body"]
        response_dict["body"] = b"{}"


def _env_attempts() -> int:
    """`AWS_MAX_ATTEMPTS` when set (the standard variable), else 6."""
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS", "6")))
    except ValueError:
        return 6


def error_code(exc: ClientError) -> str:
    """AWS's error code of a failed call ("" when it has none)."""
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


class Clients:
    """Lazily created, shared aiobotocore clients (aioboto3's own), keyed by (service, region).

    `max_attempts` counts every attempt of a call, the first included, as the standard
    `AWS_MAX_ATTEMPTS` does (default: that variable, else 6).

    Use as ``async with Clients(...) as clients: s3 = await clients.get("s3")``.
    """

    def __init__(
        self,
        *,
        max_pool_connections: int = 32,
        max_attempts: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        self._session: Any = None  # made with the first client: the SDK loads only when a call is made
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts or _env_attempts()},
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tcp_keepalive=True,
            # Per request, botocore otherwise re-sanitizes its whole User-Agent string character by
            # character and computes a CRC32 of every body: together about a fifth of the client
            # CPU of a call (bench/requests.py). Integrity: TLS on the wire, and the archive's own
            # SHA-256 digests, read back and compared.
            user_agent="replayer",  # not its version: importlib.metadata costs ~50 ms at start-up
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = asyncio.Lock()

    async def get(self, service: str, region: str | None = None) -> Any:
        """The client for `service` in `region` (default: the environment's region)."""
        key = (service, region or default_region())
        if key in self._clients:
            return self._clients[key]
        async with self._lock:
            if key not in self._clients:
                config = (
                    self._config.merge(_SERVICE_CONFIG[service])
                    if service in _SERVICE_CONFIG
                    else self._config
                )
                client = await self._stack.enter_async_context(
                    self._sdk().create_client(service, region_name=key[1], config=config)
                )
                for event in _RAW_OPERATIONS:
                    client.meta.events.register(event, _keep_raw_body)
                self._clients[key] = client
            return self._clients[key]

    async def has_credentials(self) -> bool:
        """True when the standard chain (environment, profile, role) yields credentials."""
        return await self._sdk().get_credentials() is not None

    def _sdk(self) -> Any:
        """The SDK session, made on first use: commands and checks that call nothing never load it."""
        if self._session is None:
            # aioboto3's engine, without boto3's resource layer and S3 transfer hooks (about 0.1 s
            # of start-up replayer never uses); imported here, not at import (about 0.2 s more).
            from aiobotocore.session import get_session

            self._session = get_session()
        return self._session

    async def close(self) -> None:
        self._clients.clear()
        await self._stack.aclose()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SqsQueue:
    """One SQS queue, typed: the calls replayer makes on it (receive, delete, visibility)."""

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self._client = client
        # Held around every visibility change, so a heartbeat never lands after a retry's own.
        self.visibility_lock = asyncio.Lock()

    @classmethod
    async def open(cls, clients: Clients, url: str) -> SqsQueue:
        """The queue at `url`, through a client of the region its URL names (else the default)."""
        from replayer.config import queue_region

        return cls(url, await clients.get("sqs", queue_region(url)))

    async def receive(
        self, *, at_most: int, wait_seconds: int, visibility_timeout: int
    ) -> list[dict[str, Any]]:
        """Up to `at_most` (≤ 10) messages, each with its ApproximateReceiveCount."""
        answer = await self._client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, at_most)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages: list[dict[str, Any]] = answer.get("Messages") or []
        return messages

    async def visible(self) -> int:
        """ApproximateNumberOfMessages: messages waiting to be received (SQS's estimate)."""
        answer = await self._client.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    async def delete(self, receipt: str) -> None:
        await self._client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    async def change_visibility(self, receipt: str, seconds: int) -> None:
        await self._client.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds
        )

    async def change_visibility_batch(self, receipts: list[str], seconds: int) -> list[tuple[int, str]]:
        """ChangeMessageVisibilityBatch for up to 10 receipts; the (index, error code) of each failure."""
        entries = [
            {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds} for i, r in enumerate(receipts)
        ]
        answer = await self._client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
        return [(int(f.get("Id", 0)), str(f.get("Code"))) for f in answer.get("Failed") or []]

    async def send(self, body: str, attributes: dict[str, Any]) -> str:
        """SendMessage; the new message's id."""
        answer = await self._client.send_message(
            QueueUrl=self.url, MessageBody=body, MessageAttributes=attributes
        )
        return str(answer.get("MessageId", ""))
