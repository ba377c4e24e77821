"""A Kafka dead-letter topic as the failure source of `drain` and `run` (a Kafka-topic on-failure destination).

Each record of the topic is one failure message (Lambda's one-record form: `KafkaBatchInfo` with
`recordInfo` and its `payload`); its ranges go through the shared core, and the message is settled
by the one rule (`replayer.settle`): replayed, or lost with a durable report, or quarantined. The
consumer group's offset is committed only past records so settled, in order: a record that must be
retried stops its partition there (the group's offset stays before it), and it is worked on again
after the retry delay (`run`) or by the next `drain`. Kafka has no redrive policy, so a record that
is rejected with no `--quarantine` to keep it also stops its partition, and says why.

The topic is trusted like a configured failure bucket (the operator names it; AWS writes it), so a
record's inline payload is believed when it is exactly its range.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from replayer import logs
from replayer.config import Settings
from replayer.core import Replayer, cap_ranges
from replayer.errors import ConfigError, ParseError
from replayer.model import Outcome
from replayer.observe import Recorder
from replayer.parse import Message, parse_message
from replayer.readers.kafka import KafkaEndpoint, KafkaReader, NoEndpoint
from replayer.settle import Action, Settler, retry_delay
from replayer.settle.quarantine import Quarantine
from replayer.sources.sqs import KEPT_OUTCOMES, ServiceSummary

__all__ = ["DeadLetterTopic"]

log = logs.get_logger("replayer.kafka_topic")

_MAX_MESSAGE_BYTES = 1024 * 1024  # a dead-letter record holds one failed record and its metadata


class DeadLetterTopic:
    """Consumes `settings.kafka_topic` (CLUSTER=TOPIC) with consumer group `settings.kafka_group`
    until stopped, or, with `burst`, until the group has caught up with the topic."""

    def __init__(
        self,
        settings: Settings,
        replayer: Replayer,
        reader: KafkaReader,
        *,
        recorder: Recorder,
        quarantine: Quarantine | None = None,
        burst: bool = False,
    ) -> None:
        if settings.kafka_topic is None:
            raise ValueError("settings.kafka_topic is required")
        self.cluster, self.topic = settings.kafka_topic
        self.settings = settings
        self.replayer = replayer
        self.reader = reader
        self.burst = burst
        self.settler = Settler.of(settings, recorder=recorder, quarantine=quarantine, deletes=True)
        self.summary = ServiceSummary(recorder, deque(maxlen=None if burst else KEPT_OUTCOMES))
        self.alive = True
        self.ready = False
        self.seconds_to_nearest_expiry = float("inf")
        self._stop = asyncio.Event()
        self._held_until: dict[Any, float] = {}  # partition -> when a retried record is tried again
        self._attempts: dict[tuple[Any, int], int] = {}  # (partition, offset) -> receives so far

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        return {"topic": self.topic, "cluster": self.cluster, "held_partitions": len(self._held_until)}

    @property
    def source(self) -> str:
        return f"kafka://{self.topic}@{self.cluster}"

    async def run(self) -> ServiceSummary:
        from aiokafka import AIOKafkaConsumer

        try:
            endpoint = await self.reader.cluster_endpoint(self.cluster)
        except NoEndpoint as exc:
            raise ConfigError(f"--kafka-topic {self.cluster}={self.topic}: {exc}") from None
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=list(endpoint.servers),
            client_id="replayer",
            group_id=self.settings.kafka_group,
            enable_auto_commit=False,  # committed here, past settled records only
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=_MAX_MESSAGE_BYTES,
            **endpoint.options,
        )
        await consumer.start()
        try:
            await self._consume(consumer, endpoint)
        finally:
            self.alive = False
            await consumer.stop()
        return self.summary

    async def _consume(self, consumer: Any, endpoint: KafkaEndpoint) -> None:
        wait_ms = max(1, self.settings.wait_seconds) * 1000
        idle = 0
        while not self._stop.is_set():
            self._resume_due(consumer)
            batch = await consumer.getmany(timeout_ms=wait_ms, max_records=max(1, self.settings.prefetch))
            self.ready = True
            if not batch:
                idle += 1
                if self.burst and (not self._held_until or idle > 1):
                    return  # caught up (a retried partition is left for the next drain)
                continue
            idle = 0
            for tp, records in batch.items():
                await self._partition(consumer, tp, records)

    async def _partition(self, consumer: Any, tp: Any, records: list[Any]) -> None:
        """Work the partition's records in order; commit past the settled ones; stop at the first that is not."""
        committed = None
        for record in records:
            if self._stop.is_set():
                break
            action, deadline = await self._message(tp, record)
            if action in (Action.DELETE, Action.QUARANTINE):
                committed = record.offset + 1
                self._attempts.pop((tp, record.offset), None)
                continue
            # Not settled: the group's offset stays before it; it is fetched again later.
            receives = self._attempts.get((tp, record.offset), 1)
            delay = retry_delay(
                receives,
                base=self.settings.retry_base_seconds,
                maximum=self.settings.retry_max_seconds,
                deadline=deadline,
            )
            consumer.seek(tp, record.offset)
            consumer.pause(tp)
            self._held_until[tp] = time.monotonic() + delay
            break
        if committed is not None:
            await consumer.commit({tp: committed})

    def _resume_due(self, consumer: Any) -> None:
        now = time.monotonic()
        for tp, until in list(self._held_until.items()):
            if self.burst:
                continue  # a drain does not wait: the record stays for the next run
            if until <= now:
                del self._held_until[tp]
                consumer.resume(tp)

    async def _message(self, tp: Any, record: Any) -> tuple[Action, float]:
        """One dead-letter record worked and settled; the action taken, and its earliest deadline."""
        key = (tp, record.offset)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        self.settler.recorder.message("received")
        message_id = f"{tp.topic}-{tp.partition}@{record.offset}"
        body = (record.value or b"").decode("utf-8", errors="replace")
        message = Message(message_id, body, receive_count=self._attempts[key])
        outcomes: list[Outcome] = []
        deadline = float("inf")
        try:
            failures = parse_message(record.value or b"", f"{message_id}.$", payloads=True)
        except ParseError as exc:
            message = Message(message_id, body, receive_count=message.receive_count, parse_error=str(exc))
        else:
            kept, refused = cap_ranges(failures, self.settings.max_ranges_per_message)
            outcomes = [*await asyncio.gather(*(self.replayer.replay(f) for f in kept)), *refused]
            deadlines = [await self.replayer.deadline(f) for f in kept]
            deadline = min(deadlines, default=deadline)
        for outcome in outcomes:
            self.summary.outcomes.append(outcome)
        decision = await self.settler.settle(message, outcomes, deadline=deadline, source=self.source)
        return decision.action, deadline
