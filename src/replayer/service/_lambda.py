"""replayer as a Lambda function: SQS, SNS and S3 event notifications in, the shared core, settle.

Imported lazily by `replayer.lambda_handler` on the first invocation. One `LambdaRuntime`
lives as long as the execution environment: one event loop, one set of AWS clients
(aioboto3 clients are bound to the loop that created them), reused by warm invocations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.aws import Clients
from replayer.config import Settings, load_settings, queue_region
from replayer.errors import ConfigError, ParseError
from replayer.mappings import esm_uuid_from_key
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.parse import parse_message, s3_object_refs, sqs_messages
from replayer.service import build_replayer
from replayer.service._loop import deadline_of
from replayer.service._metrics import Tally
from replayer.service._quarantine import QuarantineError
from replayer.service._settle import Action, Decision, decide, retry_delay
from replayer.sinks import Delivery, sink_from_uri

__all__ = ["LambdaRuntime", "UnsettledError"]

log = structlog.get_logger("replayer.lambda")

_HARD_FLOOR_SECONDS = 1.0  # in-flight work is cut this long before the function's own timeout
_SQS_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[\w.-]+)$"
)


class UnsettledError(Exception):
    """Raised for SNS and S3 events when something is not settled: Lambda's own retries take over."""


class _Context(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(eq=False)
class _Message:
    """One unit to settle: an SQS message, an SNS record, or an S3 object."""

    id: str
    body: str
    receipt: str | None = None
    receive_count: int = 1
    queue_url: str | None = None
    failures: list[Failure] = field(default_factory=list)
    parse_error: str | None = None
    decision: Decision | None = None


class _Budget:
    def __init__(self, context: _Context | None, margin: float) -> None:
        self._context = context
        self.margin = margin

    def remaining(self) -> float:
        if self._context is None:
            return math.inf
        return self._context.get_remaining_time_in_millis() / 1000

    def may_start(self) -> bool:
        return self.remaining() > self.margin


class _Forward:
    """A Recorder that forwards to the current invocation's Tally (the sinks are built once)."""

    def __init__(self) -> None:
        self.target: Tally = Tally()

    def message(self, event: str, n: int = 1) -> None:
        self.target.message(event, n)

    def outcome(self, outcome: Outcome) -> None:
        self.target.outcome(outcome)

    def read_seconds(self, seconds: float) -> None:
        self.target.read_seconds(seconds)

    def sink_seconds(self, sink: str, seconds: float, delivery: Delivery | None) -> None:
        self.target.sink_seconds(sink, seconds, delivery)

    def gauges(self, *, in_flight: int, held: int, nearest_expiry: float, near_expiry: int = 0) -> None:
        self.target.gauges(
            in_flight=in_flight, held=held, nearest_expiry=nearest_expiry, near_expiry=near_expiry
        )


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The handler's settings: `REPLAYER_*` variables only. Raises ConfigError listing every problem."""
    probe = Clients()  # only to build sinks for checking: creates no AWS client

    def sink_check(uri: str) -> str | None:
        try:
            sink_from_uri(uri, probe)
        except ConfigError as exc:
            return str(exc).removeprefix("--to ")
        return None

    def durable(uris: Sequence[str]) -> bool:
        return any(sink_check(u) is None and sink_from_uri(u, probe).durable for u in uris)

    return load_settings(None, env, need_queue=False, sink_check=sink_check, durable_check=durable)


class LambdaRuntime:
    """Everything that outlives one invocation: settings, loop, clients, core."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.clients = Clients(max_pool_connections=max(10, settings.concurrency * 2 + 4))
        self.recorder = _Forward()
        self.replayer, self.quarantine = build_replayer(settings, self.clients, self.recorder)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LambdaRuntime:
        settings = settings_from_env(env)
        logs.configure(settings.log_level)
        for warning in settings.warnings:
            log.warning("configuration_warning", warning=warning)
        return cls(settings)

    def invoke(self, event: Mapping[str, Any], context: _Context | None) -> dict[str, Any]:
        return self.loop.run_until_complete(self.handle(event, context))

    def close(self) -> None:
        self.loop.run_until_complete(self.clients.close())
        self.loop.close()

    async def handle(self, event: Mapping[str, Any], context: _Context | None) -> dict[str, Any]:
        tally = self.recorder.target = Tally()
        source = event_source(event)
        budget = _Budget(context, self.settings.safety_margin_seconds)
        structlog.contextvars.clear_contextvars()
        try:
            if source == "aws:sqs":
                return await self._sqs(event, budget)
            if source == "aws:sns":
                return await self._unit_event(self._sns_messages(event), budget, source)
            if source == "aws:s3":
                return await self._unit_event(await self._s3_messages(event), budget, source)
            raise ValueError(f"not an SQS, SNS or S3 event (event source {source or 'missing'})")
        finally:
            await _flush_metrics(tally, source or "unknown")

    # ---- the three event kinds

    async def _sqs(self, event: Mapping[str, Any], budget: _Budget) -> dict[str, Any]:
        pairs = sqs_messages(event)  # a malformed SQS event is a bug upstream: raise, the batch returns
        records = event["Records"]
        messages = []
        for (message_id, body), record in zip(pairs, records, strict=True):
            attributes = record.get("attributes") or {}
            messages.append(
                _Message(
                    message_id,
                    body,
                    receipt=record.get("receiptHandle"),
                    receive_count=_int(attributes.get("ApproximateReceiveCount"), 1),
                    queue_url=_queue_url(record.get("eventSourceARN")),
                )
            )
        await self._work(messages, budget, "aws:sqs")
        failures = []
        for message in messages:
            assert message.decision is not None
            if message.decision.action in (Action.DELETE, Action.QUARANTINE):
                continue
            failures.append({"itemIdentifier": message.id})
            if (
                message.decision.action in (Action.RETRY, Action.LEAVE)
                and message.decision.reason != _OUT_OF_TIME
            ):
                await self._delay(message)
        return {"batchItemFailures": failures}

    def _sns_messages(self, event: Mapping[str, Any]) -> list[_Message]:
        messages = []
        for i, record in enumerate(event.get("Records") or []):
            sns = record.get("Sns") if isinstance(record, Mapping) else None
            message_id = (
                str(sns.get("MessageId") or f"record-{i}") if isinstance(sns, Mapping) else f"record-{i}"
            )
            body = sns.get("Message") if isinstance(sns, Mapping) else None
            messages.append(_Message(message_id, body if isinstance(body, str) else ""))
            if not isinstance(body, str):
                messages[-1].parse_error = f"$.Records[{i}].Sns.Message: missing or not a string"
        return messages

    async def _s3_messages(self, event: Mapping[str, Any]) -> list[_Message]:
        s3 = await self.clients.get("s3")
        messages = []
        for bucket, key in s3_object_refs(event):
            try:
                answer = await s3.get_object(Bucket=bucket, Key=key)
                async with answer["Body"] as stream:
                    raw = await stream.read()
            except (ClientError, BotoCoreError) as exc:
                raise UnsettledError(f"s3://{bucket}/{key}: cannot read: {exc}") from exc
            message = _Message(f"s3://{bucket}/{key}", raw.decode("utf-8", "replace"))
            try:
                message.body = raw.decode("utf-8")
            except UnicodeDecodeError:
                message.parse_error = "$: the object is not UTF-8 text"
            messages.append(message)
        return messages

    async def _unit_event(self, messages: list[_Message], budget: _Budget, source: str) -> dict[str, Any]:
        """SNS and S3 events: nothing to report per item, so anything unsettled raises for a retry."""
        await self._work(messages, budget, source)
        unsettled = [
            m for m in messages if m.decision and m.decision.action not in (Action.DELETE, Action.QUARANTINE)
        ]
        if unsettled:
            reasons = "; ".join(f"{m.id}: {m.decision.reason if m.decision else '?'}" for m in unsettled)
            raise UnsettledError(f"{len(unsettled)} of {len(messages)} not settled ({reasons})")
        return {"settled": len(messages)}

    # ---- the shared work: parse, replay earliest deadline first within the time left, decide

    async def _work(self, messages: list[_Message], budget: _Budget, source: str) -> None:
        self.recorder.message("received", len(messages))
        for message in messages:
            if message.parse_error is None:
                try:
                    message.failures = parse_message(message.body, path="$")
                    if uuid := esm_uuid_from_key(message.id):  # an S3 destination key names its mapping
                        message.failures = [
                            dataclasses.replace(f, mapping_uuid=uuid) for f in message.failures
                        ]
                except ParseError as exc:
                    message.parse_error = str(exc)
        outcomes = await self._replay_all([f for m in messages for f in m.failures], budget)
        for message in messages:
            with structlog.contextvars.bound_contextvars(message_id=message.id, source=source):
                message.decision = await self._settle(message, outcomes)

    async def _replay_all(self, failures: list[Failure], budget: _Budget) -> dict[str, Outcome]:
        unique = {f.range_id: f for f in failures}
        deadlines = await asyncio.gather(*(deadline_of(self.replayer, f) for f in unique.values()))
        ordered = [f for _, f in sorted(zip(deadlines, unique.values(), strict=True), key=lambda p: p[0])]
        outcomes: dict[str, Outcome] = {}
        slots = asyncio.Semaphore(self.settings.concurrency)

        async def one(failure: Failure) -> None:
            async with slots:  # FIFO: ranges start in deadline order
                if not budget.may_start():
                    return  # too little time left to start: the message is retried
                try:
                    outcome = await self.replayer.replay(failure)
                except Exception as exc:  # never report success for what was not done
                    log.exception("replay_crashed", range_id=failure.range_id)
                    outcome = Outcome(OutcomeKind.RETRY, failure, reason=f"unexpected error: {exc}")
                outcomes[failure.range_id] = outcome
                self.recorder.outcome(outcome)

        tasks = [asyncio.create_task(one(f)) for f in ordered]
        if tasks:
            limit = budget.remaining() - _HARD_FLOOR_SECONDS
            _, late = await asyncio.wait(tasks, timeout=None if math.isinf(limit) else max(0.0, limit))
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if late:
                log.warning("out_of_time", unfinished=len(late))
        return outcomes

    async def _settle(self, message: _Message, outcomes: Mapping[str, Outcome]) -> Decision:
        can_quarantine = self.quarantine is not None
        if message.parse_error is None and any(f.range_id not in outcomes for f in message.failures):
            for failure in message.failures:  # a not-allowed range needs no time: it is never read
                if failure.range_id not in outcomes and (refusal := self.replayer.check(failure)) is not None:
                    outcomes = {**outcomes, failure.range_id: refusal}
        if message.parse_error is None and any(f.range_id not in outcomes for f in message.failures):
            decision = Decision(Action.RETRY, _OUT_OF_TIME)
        else:
            ranges = [outcomes[f.range_id] for f in message.failures]
            decision = decide(ranges, parse_error=message.parse_error, can_quarantine=can_quarantine)
        if decision.action is Action.QUARANTINE:
            assert self.quarantine is not None
            try:
                where = await self.quarantine.put(message.body, decision.reason, message.id, "lambda")
            except QuarantineError as exc:
                log.error("quarantine_failed", error=str(exc), reason=decision.reason)
                decision = Decision(Action.RETRY, f"quarantine failed: {exc}")
            else:
                log.warning("message_quarantined", reason=decision.reason, quarantine=where)
        event = {
            Action.DELETE: "deleted",
            Action.QUARANTINE: "quarantined",
            Action.RETRY: "retried",
            Action.LEAVE: "left",
        }[decision.action]
        self.recorder.message(event)
        if decision.action is not Action.DELETE:
            log.warning(f"message_{event}", reason=decision.reason)
        return decision

    async def _delay(self, message: _Message) -> None:
        """Give a retried SQS message a growing delay before Lambda's poller sees it again."""
        if message.receipt is None or message.queue_url is None:
            return
        deadlines = [await deadline_of(self.replayer, f) for f in message.failures]
        nearest = min(deadlines, default=math.inf)
        delay = retry_delay(
            message.receive_count,
            base=self.settings.retry_base_seconds,
            maximum=self.settings.retry_max_seconds,
            deadline=datetime.fromtimestamp(nearest, UTC) if math.isfinite(nearest) else None,
            now=datetime.now(UTC),
        )
        try:
            sqs = await self.clients.get("sqs", queue_region(message.queue_url))
            await sqs.change_message_visibility(
                QueueUrl=message.queue_url, ReceiptHandle=message.receipt, VisibilityTimeout=delay
            )
        except (ClientError, BotoCoreError) as exc:  # the queue's own visibility timeout applies then
            log.info("change_visibility_failed", message_id=message.id, error=str(exc))


_OUT_OF_TIME = "the invocation ran out of time before this message's ranges were done"


def event_source(event: Mapping[str, Any]) -> str | None:
    """`aws:sqs`, `aws:sns` or `aws:s3` from a Lambda event's first record (None when unknown)."""
    if event.get("Event") == "s3:TestEvent":
        return "aws:s3"
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list) or not records or not isinstance(records[0], Mapping):
        return None
    source = records[0].get("eventSource") or records[0].get("EventSource")
    return source if isinstance(source, str) else None


def _queue_url(arn: object) -> str | None:
    """The queue URL of an SQS queue ARN (the endpoint override, if any, still decides where calls go)."""
    if not isinstance(arn, str) or not (m := _SQS_ARN.match(arn)):
        return None
    return f"https://sqs.{m['region']}.amazonaws.com/{m['account']}/{m['name']}"


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


async def _flush_metrics(tally: Tally, source: str) -> None:
    """The invocation's counts as one CloudWatch embedded-metric-format line on stdout."""
    from aws_embedded_metrics.logger.metrics_logger_factory import create_metrics_logger

    metrics = create_metrics_logger()
    metrics.set_namespace(os.environ.get("AWS_EMF_NAMESPACE") or "replayer")
    metrics.set_dimensions({"EventSource": source})
    for name, value in sorted(tally.counts.items()):
        metrics.put_metric("".join(part.capitalize() for part in name.split("_")), value, "Count")
    for seconds in tally.read_times:
        metrics.put_metric("ReadSeconds", seconds, "Seconds")
    for seconds in tally.sink_times:
        metrics.put_metric("SinkSeconds", seconds, "Seconds")
    try:
        await metrics.flush()
    except Exception as exc:  # metrics never decide whether a message is settled
        log.warning("metrics_flush_failed", error=str(exc))
