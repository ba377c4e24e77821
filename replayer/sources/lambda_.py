"""replayer as a Lambda function: SQS, SNS and S3 event notifications in, the shared core, settle.

Imported lazily by `replayer.lambda_handler` on the first invocation. One `LambdaRuntime`
lives as long as the execution environment: one event loop, one set of AWS clients
(aioboto3 clients are bound to the loop that created them), reused by warm invocations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.allow import BucketAllowList
from replayer.aws import SqsQueue
from replayer.config import Settings, load
from replayer.core import OUT_OF_TIME, Ticket, cap_ranges
from replayer.errors import ParseError
from replayer.mappings import esm_uuid_from_key
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.observe import Recorder, emf
from replayer.parse import LambdaEvent, Message, S3Object, lambda_event, parse_message
from replayer.settle import Action, Decision, Settler
from replayer.sinks import keeps_reports, sink_problem
from replayer.sources import build_replayer, clients_for
from replayer.watch import is_schedule_event, watch_round, watches

__all__ = ["LambdaRuntime", "UnsettledError", "settings_from_env"]

log = logs.get_logger("replayer.lambda")

_SETTLED = (Action.DELETE, Action.QUARANTINE)
_CHUNK = 1 << 20  # S3 objects are read a MiB at a time, up to --max-object-bytes
_HARD_FLOOR_SECONDS = 1.0  # in-flight work is cut this long before the function's own timeout


def _by_reference(obj: S3Object, size: int | None, reason: str) -> Message:
    """A message that quarantines an S3 object by reference: what it is and why, not its body."""
    reference = {"s3_object": {"bucket": obj.bucket, "key": obj.key, "size": size}, "reason": reason}
    return Message(obj.uri, json.dumps(reference), parse_error=f"{obj.uri}: {reason}")


class UnsettledError(Exception):
    """Raised for SNS and S3 events when something is not settled: Lambda's own retries take over."""


class _Context(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class _Budget:
    """The invocation's time: no range starts with less than `margin` seconds left."""

    def __init__(self, context: _Context | None, margin: float) -> None:
        self._context = context
        self.margin = margin

    def remaining(self) -> float:
        if self._context is None:
            return math.inf
        return self._context.get_remaining_time_in_millis() / 1000

    def may_start(self) -> bool:
        return self.remaining() > self.margin


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The handler's settings: `REPLAYER_*` variables only. Raises ConfigError listing every problem."""
    return load("lambda", None, env, sink_check=sink_problem, durable_check=keeps_reports)


class LambdaRuntime:
    """Everything that outlives one invocation: settings, loop, clients, core."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.clients = clients_for(settings)
        self.recorder = Recorder()  # its tally is taken (and flushed as EMF) by every invocation
        self.failure_buckets = BucketAllowList.of(settings.failure_buckets)
        self.replayer, quarantine = build_replayer(settings, self.clients, self.recorder)
        self.settler = Settler.of(
            settings, recorder=self.recorder, quarantine=quarantine, deletes=False
        )  # Lambda deletes every message not reported in batchItemFailures

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
        self.recorder.take()  # counts of this invocation only
        logs.clear()
        source = "unknown"
        try:
            if is_schedule_event(event) and watches(self.settings):  # the at-risk watch's scheduled round
                source = "aws.events"
                return await watch_round(self.settings, self.clients, self.recorder)
            try:
                incoming = lambda_event(event)
            except ParseError as exc:  # not an event this function takes: a deployment mistake
                raise ValueError(str(exc)) from exc
            source = incoming.source
            budget = _Budget(context, self.settings.safety_margin_seconds)
            if incoming.source == "aws:sqs":
                return await self._sqs(incoming, budget)
            messages = list(incoming.messages) or await self._s3_messages(incoming.objects)
            return await self._unit_event(messages, budget, incoming.source)
        finally:
            await emf.flush(self.recorder.take(), source)

    # ---- the three event kinds

    async def _sqs(self, incoming: LambdaEvent, budget: _Budget) -> dict[str, Any]:
        decisions = await self._work(list(incoming.messages), budget, incoming.source)
        failures = [
            {"itemIdentifier": m.id}
            for m, decision in zip(incoming.messages, decisions, strict=True)
            if decision.action not in _SETTLED
        ]
        return {"batchItemFailures": failures}

    async def _s3_messages(self, objects: Sequence[S3Object]) -> list[Message]:
        """Each object named, read when it is allowed and small enough; otherwise a message that
        quarantines it by reference (bucket, key, size, reason), never by copying its body."""
        messages = []
        for obj in objects:
            if not self.failure_buckets.allows(obj.bucket, obj.key):
                why = (
                    "not in --failure-bucket"
                    if not self.failure_buckets.empty
                    else "no --failure-bucket is configured"
                )
                messages.append(_by_reference(obj, obj.size, f"{obj.uri} is not a failure bucket: {why}"))
            elif obj.size is not None and obj.size > self.settings.max_object_bytes:
                messages.append(_by_reference(obj, obj.size, self._too_large(obj.size)))
            else:
                messages.append(await self._read_object(obj))
        return messages

    def _too_large(self, size: int | None) -> str:
        shown = "more" if size is None else f"{size}"
        return (
            f"the object holds {shown} bytes, more than --max-object-bytes {self.settings.max_object_bytes}"
        )

    async def _read_object(self, obj: S3Object) -> Message:
        """The object's text, streamed and capped: reading stops one chunk past the limit."""
        s3 = await self.clients.get("s3")
        limit = self.settings.max_object_bytes
        try:
            async with asyncio.timeout(self.clients.call_deadline):
                answer = await s3.get_object(Bucket=obj.bucket, Key=obj.key)
                size = answer.get("ContentLength")
                chunks: list[bytes] = []
                read = 0
                body = answer["Body"]
                async with body:  # closed unread when too large
                    if isinstance(size, int) and size > limit:
                        return _by_reference(obj, size, self._too_large(size))
                    while chunk := await body.read(_CHUNK):
                        read += len(chunk)
                        if read > limit:
                            return _by_reference(
                                obj, size if isinstance(size, int) else None, self._too_large(size)
                            )
                        chunks.append(chunk)
        except (ClientError, BotoCoreError, TimeoutError) as exc:
            raise UnsettledError(f"{obj.uri}: cannot read: {exc}") from exc
        raw = b"".join(chunks)
        del chunks
        try:
            return Message(obj.uri, raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _by_reference(obj, len(raw), "the object is not UTF-8 text")

    async def _unit_event(self, messages: list[Message], budget: _Budget, source: str) -> dict[str, Any]:
        """SNS and S3 events: nothing to report per item, so anything unsettled raises for a retry."""
        decisions = await self._work(messages, budget, source)
        unsettled = [
            f"{m.id}: {d.reason}"
            for m, d in zip(messages, decisions, strict=True)
            if d.action not in _SETTLED
        ]
        if unsettled:
            raise UnsettledError(f"{len(unsettled)} of {len(messages)} not settled ({'; '.join(unsettled)})")
        return {"settled": len(messages)}

    # ---- the shared work: parse, schedule within the time left, settle

    async def _work(self, messages: list[Message], budget: _Budget, source: str) -> list[Decision]:
        self.recorder.message("received", len(messages))
        parsed: list[tuple[Message, list[Failure], list[Outcome]]] = []
        for message in messages:
            failures: list[Failure] = []
            refused: list[Outcome] = []
            if message.parse_error is None:
                try:
                    # Only S3 on-failure destination objects may bring their records (#11).
                    failures = parse_message(message.body, path="$", payloads=source == "aws:s3")
                    if uuid := esm_uuid_from_key(message.id):  # an S3 destination key names its mapping
                        failures = [dataclasses.replace(f, mapping_uuid=uuid) for f in failures]
                    failures, refused = cap_ranges(failures, self.settings.max_ranges_per_message)
                except ParseError as exc:
                    message = dataclasses.replace(message, parse_error=str(exc))
            for refusal in refused:
                self.recorder.outcome(refusal)
            parsed.append((message, failures, refused))
        scheduler = self.replayer.scheduler(
            concurrency=self.settings.concurrency, may_start=budget.may_start, on_done=self.recorder.outcome
        )
        limit = budget.remaining() - _HARD_FLOOR_SECONDS
        tickets = iter(
            await scheduler.run(
                (f for _, failures, _ in parsed for f in failures),
                within=None if math.isinf(limit) else max(0.0, limit),
            )
        )
        decisions = []
        for message, failures, refused in parsed:
            mine = [next(tickets) for _ in failures]
            with logs.bound(source=source):
                decisions.append(await self._settle(message, mine, refused))
        return decisions

    async def _settle(
        self, message: Message, tickets: list[Ticket[Failure]], refused: list[Outcome]
    ) -> Decision:
        outcomes: list[Outcome] = []
        unique = list({t.key: t for t in tickets}.values())
        for ticket in unique:
            outcome = ticket.result()
            if outcome is None:  # cut at the hard floor: it comes back when its visibility lapses
                log.warning("out_of_time", range_id=ticket.item.range_id)
                outcome = Outcome(OutcomeKind.RETRY, ticket.item, reason=OUT_OF_TIME)
            outcomes.append(outcome)
        outcomes += refused
        queue = await SqsQueue.open(self.clients, message.queue_url) if message.queue_url else None
        deadline = min((t.deadline for t in unique), default=math.inf)
        return await self.settler.settle(message, outcomes, queue=queue, deadline=deadline, source="lambda")
