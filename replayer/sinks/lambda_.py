"""`lambda:NAME`: re-drive a range to a repair function, in the event Lambda would have sent.

The function is invoked synchronously with ``{"Records": [...]}`` (records in sequence
order), in as many invocations as the 6 MB payload limit and the records-per-invoke
limit require. A function error, or records the function did not confirm through
``batchItemFailures``, are retried with backoff and jitter; when the retries run out the
range's outcome is `retry`. Delivery is at least once: a retried invocation, or a later
retry of the whole range, hands the function records it may already have processed.
"""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.aws import Clients, error_code
from replayer.errors import ConfigError
from replayer.filtering import PatternError
from replayer.model import Failure, StreamKind, StreamRecord
from replayer.readers import RangeRecords, ReadResult
from replayer.selection import Selection, to_send
from replayer.sinks._base import Delivery, SinkError
from replayer.sinks._identity import Roles, with_identity
from replayer.sinks.guard import Guard
from replayer.sinks.kafka_event import kafka_envelope

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = [
    "DEFAULT_INVOKE_TIME_LIMIT",
    "DEFAULT_MAX_INVOCATIONS",
    "CLIENT_CONTEXT_LIMIT",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_RECORDS",
    "FunctionFailed",
    "LambdaSink",
    "LambdaTarget",
    "PAYLOAD_LIMIT",
    "chunks",
    "client_context",
    "event_payload",
    "function_error",
    "log_tail",
    "parse_target",
    "unconfirmed",
]

log = logs.get_logger(__name__)

# Lambda's limit on a synchronous invocation's request payload.
PAYLOAD_LIMIT = 6_291_456
# What the sink puts in one invocation: the limit, less a margin for how AWS counts.
DEFAULT_MAX_PAYLOAD = 6_000_000
# Lambda's limit on an Invoke's ClientContext (base64 text).
CLIENT_CONTEXT_LIMIT = 3583
# Bounds of one batch's re-drive, however it progresses (the last invocation is not cut short).
DEFAULT_MAX_INVOCATIONS = 100
DEFAULT_INVOKE_TIME_LIMIT = 900.0  # seconds: Lambda's own longest timeout
# Records per invocation when neither the option nor the range's batchSize says.
DEFAULT_MAX_RECORDS = 100

_HEAD = b'{"Records":['
_TAIL = b"]}"
_ENVELOPE = len(_HEAD) + len(_TAIL)

_NAME = r"[A-Za-z0-9_-]{1,64}"
_QUALIFIER = r"[A-Za-z0-9$_-]{1,128}"
_BY_NAME = re.compile(rf"^(?P<name>{_NAME})(?::(?P<qualifier>{_QUALIFIER}))?$")
_BY_ARN = re.compile(
    r"^(?P<arn>arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:" + _NAME + r")"
    rf"(?::(?P<qualifier>{_QUALIFIER}))?$"
)
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class LambdaTarget:
    """The function a `lambda:` URI names: a name or ARN, an optional qualifier, its region."""

    function: str  # name or unqualified ARN, as given
    qualifier: str | None = None
    region: str | None = None  # from an ARN; None: the environment's region
    account: str | None = None  # from an ARN: another account's function is invoked with its --assume-role

    @property
    def spec(self) -> str:
        """``NAME[:QUALIFIER]`` or ``ARN[:QUALIFIER]``: what follows ``lambda:``."""
        return f"{self.function}:{self.qualifier}" if self.qualifier else self.function


def parse_target(spec: str) -> LambdaTarget:
    """`NAME`, `NAME:QUALIFIER`, or a function ARN (optionally qualified); ConfigError otherwise."""
    if m := _BY_ARN.match(spec):
        return LambdaTarget(m["arn"], m["qualifier"], m["region"], m["account"])
    if m := _BY_NAME.match(spec):
        return LambdaTarget(m["name"], m["qualifier"])
    raise ConfigError(
        f"{spec!r} is not a function name or ARN; "
        "expected lambda:NAME, lambda:NAME:QUALIFIER or lambda:FUNCTION_ARN[:QUALIFIER]"
    )


def client_context(failure: Failure, attempt: int, redrive_id: str) -> str:
    """The Invoke `ClientContext` marking a re-driven invocation (base64 JSON, at most 3,583 bytes).

    The function reads it as ``context.client_context.custom["replayer"]``: the range's
    `range_id`, this invocation's `attempt` (1 for the first of a batch, counting retries),
    the function that gave up on the batch (`original_function`: the invocation record's
    functionArn or pipe ARN) and `redrive_id`, one per delivery of a range.
    """
    marker: dict[str, object] = {
        "range_id": failure.range_id,
        "attempt": attempt,
        "original_function": failure.source_arn,
        "redrive_id": redrive_id,
    }
    encoded = _encode_context(marker)
    if len(encoded) > CLIENT_CONTEXT_LIMIT:  # an ARN cannot be this long; never let it stop a delivery
        marker["original_function"] = None
        encoded = _encode_context(marker)
    return encoded


def _encode_context(marker: dict[str, object]) -> str:
    document = json.dumps({"custom": {"replayer": marker}}, separators=(",", ":"))
    return base64.b64encode(document.encode()).decode("ascii")


class FunctionFailed(Exception):
    """The function failed the invocation, or did not confirm every record: try again."""


def event_payload(records: Sequence[StreamRecord], envelope: tuple[bytes, bytes] = (_HEAD, _TAIL)) -> bytes:
    """The event Lambda's event source mapping would have sent for these records (`envelope`: the
    bytes around them, ``{"Records":[`` and ``]}`` but for Kafka: `envelope_of`)."""
    return envelope[0] + b",".join(r.json for r in records) + envelope[1]


def envelope_of(failure: Failure) -> tuple[bytes, bytes]:
    """The bytes around a range's records in the event its mapping sends."""
    return kafka_envelope(failure) if failure.kind is StreamKind.KAFKA else (_HEAD, _TAIL)


def chunks(
    records: Sequence[StreamRecord],
    *,
    max_records: int,
    max_bytes: int = DEFAULT_MAX_PAYLOAD,
    envelope: int = _ENVELOPE,
) -> Iterator[tuple[StreamRecord, ...]]:
    """Consecutive runs of `records`, each at most `max_records` long with a payload of at most `max_bytes`.

    A record too large to travel alone raises ValueError before anything is yielded.
    """
    for r in records:
        if envelope + len(r.json) > max_bytes:
            raise ValueError(
                f"record {r.sequence_number} is {len(r.json)} bytes: a synchronous invocation carries at most "
                f"{max_bytes} bytes, so this range cannot be re-driven to a function"
            )
    current: list[StreamRecord] = []
    size = envelope
    for r in records:
        extra = len(r.json) + (1 if current else 0)  # the comma before it
        if current and (len(current) >= max_records or size + extra > max_bytes):
            yield tuple(current)
            current, size, extra = [], envelope, len(r.json)
        current.append(r)
        size += extra
    if current:
        yield tuple(current)


def unconfirmed(records: Sequence[StreamRecord], answer: bytes) -> tuple[StreamRecord, ...]:
    """The records a successful invocation's answer leaves unconfirmed (empty: all confirmed).

    Lambda's rule for stream batches: ``batchItemFailures`` absent, null or empty means
    success; otherwise every record from the LOWEST reported sequence number onwards is
    retried. An answer that is not JSON, a ``batchItemFailures`` that is not a list, or an
    item whose ``itemIdentifier`` does not name a record of the batch fails the whole
    invocation (FunctionFailed).
    """
    if not answer.strip():
        return ()
    try:
        document = json.loads(answer)
    except ValueError:
        raise FunctionFailed("the function's answer is not JSON") from None
    if not isinstance(document, dict) or document.get("batchItemFailures") is None:
        return ()
    items = document["batchItemFailures"]
    if not isinstance(items, list):
        raise FunctionFailed("batchItemFailures is not a list")
    position = {r.sequence: i for i, r in enumerate(records)}
    lowest: int | None = None
    for n, item in enumerate(items):
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if isinstance(ident, dict):  # Kafka: {"partition": "<topic>-<partition>", "offset": N}
            ident = str(ident.get("offset"))
        index = position.get(int(ident)) if isinstance(ident, str) and _DIGITS.fullmatch(ident) else None
        if index is None:
            raise FunctionFailed(
                f"batchItemFailures[{n}] does not name a record of the batch by its sequence number"
            )
        lowest = index if lowest is None else min(lowest, index)
    return tuple(records[lowest:]) if lowest is not None else ()


_MAX_ERROR_CHARS = 200  # of a function's errorMessage in a reason: one line of a report, not a dump
_TAIL_LINES = 5  # of the LogResult tail logged at -v


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def function_error(answer: bytes) -> str:
    """`errorType: errorMessage` of a function error's answer, on one line, capped at 200 characters
    (the message is the function's own words and may quote a record: never more than that)."""
    try:
        document = json.loads(answer)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    kind, message = document.get("errorType"), document.get("errorMessage")
    parts = [p for p in (kind, message) if isinstance(p, str) and p.strip()]
    return _one_line(": ".join(parts), _MAX_ERROR_CHARS)


def log_tail(encoded: object) -> list[str]:
    """The last lines of an invocation's base64 `LogResult` (LogType=Tail: its last 4 KB)."""
    if not isinstance(encoded, str) or not encoded:
        return []
    try:
        text = base64.b64decode(encoded).decode("utf-8", "replace")
    except ValueError:
        return []
    return [_one_line(line, 300) for line in text.splitlines() if line.strip()][-_TAIL_LINES:]


class LambdaSink:
    """Invokes a repair function with the range's records. Not durable: it keeps no loss reports."""

    durable = False

    def __init__(
        self,
        clients: Clients,
        target: LambdaTarget,
        *,
        max_records_per_invoke: int | None = None,
        invoke_retries: int = 3,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        retry_wait: float = 1.0,
        retry_wait_max: float = 30.0,
        apply_filter: bool = True,
        max_invocations: int = DEFAULT_MAX_INVOCATIONS,
        invoke_time_limit: float = DEFAULT_INVOKE_TIME_LIMIT,
        selection: Selection | None = None,
        invoke_identity_arn: str | None = None,
        guard: Guard | None = None,
    ) -> None:
        if max_records_per_invoke is not None and max_records_per_invoke < 1:
            raise ConfigError("--max-records-per-invoke must be at least 1")
        if invoke_retries < 0:
            raise ConfigError("--invoke-retries must be 0 or more")
        if max_invocations < 1 or invoke_time_limit <= 0:
            raise ConfigError("--max-invocations and --invoke-time-limit must be positive")
        if not _ENVELOPE < max_payload_bytes <= PAYLOAD_LIMIT:
            raise ConfigError(f"a payload limit must be at most {PAYLOAD_LIMIT} bytes")
        self._clients = clients
        self.target = target
        self.max_records_per_invoke = max_records_per_invoke
        self.invoke_retries = invoke_retries
        self.max_payload_bytes = max_payload_bytes
        self.retry_wait = retry_wait
        self.retry_wait_max = retry_wait_max
        self.apply_filter = apply_filter
        self.max_invocations = max_invocations
        self.invoke_time_limit = invoke_time_limit
        self.roles = Roles(clients)
        self.selection = selection
        self.invoke_identity_arn = invoke_identity_arn  # the override; None: the target's role
        self.guard = guard or Guard()  # pacing, the breaker, staleness: shared by the process's sinks

    @property
    def uri(self) -> str:
        return f"lambda:{self.target.spec}"

    def records_per_invoke(self, failure: Failure) -> int:
        """The option, else the range's original batchSize, else DEFAULT_MAX_RECORDS."""
        if self.max_records_per_invoke is not None:
            return self.max_records_per_invoke
        if failure.batch_size is not None and failure.batch_size > 0:
            return failure.batch_size
        return DEFAULT_MAX_RECORDS

    def admitted(self, failure: Failure, records: Sequence[StreamRecord]) -> list[StreamRecord]:
        """The records to send: those the failure's mapping would have delivered (all of them without
        a filter, with `apply_filter` off, or when the mapping is unknown), narrowed by `selection`."""
        try:
            kept = to_send(failure, records, selection=self.selection, apply_filter=self.apply_filter)
        except PatternError as exc:
            raise SinkError(
                f"{self.uri}: the mapping's filter cannot be applied ({exc}); "
                "re-drive with --no-filter to send every record"
            ) from exc
        if len(kept) != len(records):
            log.info("records_filtered", function=self.uri, sent=len(kept), read=len(records))
        mapping = failure.mapping
        if (
            self.apply_filter and mapping is not None and not mapping.found
        ):  # where an unknown mapping matters
            log.warning("mapping_unknown", function=self.uri, kind=mapping.kind, note=mapping.note)
        return kept

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        redrive_id = uuid.uuid4().hex  # this delivery of this range, across its invocations and retries
        read = result.records  # read from a stream: already in sequence order, no sorted copy of the range
        records = self.admitted(
            failure, read if isinstance(read, RangeRecords) else sorted(read, key=lambda r: r.sequence)
        )
        records = await self.guard.select(failure, records, self._clients)  # stale, superseded: not sent
        if failure.kind is StreamKind.KINESIS and records:  # as Lambda does: the role of the function invoked
            role = self.invoke_identity_arn or await self.roles.role_of(
                self.target.function, self.target.region, self.target.account
            )
            records = list(with_identity(failure, records, role, replace=True))
        envelope = envelope_of(failure)
        try:
            batches = list(
                chunks(
                    records,
                    max_records=self.records_per_invoke(failure),
                    max_bytes=self.max_payload_bytes,
                    envelope=len(envelope[0]) + len(envelope[1]),
                )
            )
        except ValueError as exc:  # retried like any sink failure: the message stays, then dead-letters
            raise SinkError(f"{self.uri}: {exc}") from exc
        invocations = 0
        for batch in batches:
            invocations += await self._deliver_batch(batch, failure, redrive_id, envelope)
        if records:
            log.info("range_redriven", function=self.uri, records=len(records), invocations=invocations)
        return Delivery(self.uri, notes=self.guard.notes(self.uri, failure))

    async def _deliver_batch(
        self,
        batch: tuple[StreamRecord, ...],
        failure: Failure,
        redrive_id: str,
        envelope: tuple[bytes, bytes],
    ) -> int:
        """Invoke until every record of `batch` is confirmed; the number of invocations it took.

        Like Lambda's own checkpointing: an invocation that confirms records moves the batch
        on and is retried at once; only invocations that confirm nothing count against
        `invoke_retries` (and back off). `max_invocations` and `invoke_time_limit` bound the
        whole batch, however it progresses.
        """
        pending = batch
        invocations = 0
        stalled = 0  # invocations in a row that confirmed nothing

        def give_up(state: RetryCallState) -> bool:
            spent = state.seconds_since_start or 0.0
            return (
                stalled > self.invoke_retries
                or invocations >= self.max_invocations
                or spent >= self.invoke_time_limit
            )

        def pause(state: RetryCallState) -> float:
            if stalled == 0:
                return 0.0  # the checkpoint moved: go on at once
            backoff = min(self.retry_wait_max, self.retry_wait * 2.0 ** (stalled - 1))
            return backoff + random.uniform(0, self.retry_wait)

        from tenacity import AsyncRetrying, retry_if_exception_type  # loaded when a function is invoked

        retrying = AsyncRetrying(
            stop=give_up,
            wait=pause,
            retry=retry_if_exception_type(FunctionFailed),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    invocations += 1
                    context = client_context(failure, invocations, redrive_id)
                    try:
                        remaining = await self._invoke(pending, context, envelope)
                    except FunctionFailed:
                        stalled += 1
                        raise
                    stalled = 0 if len(remaining) < len(pending) else stalled + 1
                    if remaining:
                        first = remaining[0].sequence_number
                        pending = remaining
                        raise FunctionFailed(
                            f"batchItemFailures: {len(remaining)} records from {first} not confirmed"
                        )
        except FunctionFailed as exc:
            raise SinkError(
                f"{self.uri}: {exc} (gave up on a batch of {len(batch)} records after {invocations} "
                f"invocations, the last {stalled} without progress)"
            ) from exc
        return invocations

    async def _invoke(
        self, records: tuple[StreamRecord, ...], context: str, envelope: tuple[bytes, bytes] = (_HEAD, _TAIL)
    ) -> tuple[StreamRecord, ...]:
        """One invocation, paced, within the breaker, throttling waited out (`replayer.sinks.guard`)."""
        return await self.guard.invoke(records, lambda: self._invoke_once(records, context, envelope))

    async def _invoke_once(
        self, records: tuple[StreamRecord, ...], context: str, envelope: tuple[bytes, bytes] = (_HEAD, _TAIL)
    ) -> tuple[StreamRecord, ...]:
        """One synchronous invocation; the records it left unconfirmed. Throttling and 5xx are botocore's."""
        client = await self._clients.get("lambda", self.target.region, self.target.account)
        extra = {"Qualifier": self.target.qualifier} if self.target.qualifier else {}
        if logs.enabled("info"):  # -v: the function's log tail comes back with the answer
            extra["LogType"] = "Tail"
        try:
            response = await client.invoke(
                FunctionName=self.target.function,
                InvocationType="RequestResponse",
                Payload=event_payload(records, envelope),
                ClientContext=context,
                **extra,
            )
            answer: bytes = await response["Payload"].read()
            self.guard.executed(response.get("ExecutedVersion"))
        except ClientError as exc:
            raise SinkError(f"{self.uri}: {error_code(exc) or exc}") from exc
        except BotoCoreError as exc:
            raise SinkError(f"{self.uri}: {exc}") from exc
        if response.get("FunctionError"):
            error = function_error(answer)
            if tail := log_tail(response.get("LogResult")):
                log.info("function_log_tail", function=self.uri, tail=tail)
            kind = f"function error {response['FunctionError']}"  # its own words first: what a row shows
            raise FunctionFailed(f"{error} ({kind})" if error else kind)
        return unconfirmed(records, answer)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("invoke_failed", function=self.uri, attempt=state.attempt_number, error=str(error))
