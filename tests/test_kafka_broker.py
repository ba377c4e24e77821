"""The test broker itself (tests/support/kafka.py): Tansu started like moto, and where the tests make
Apache Kafka's behaviour explicit in front of it (a moved log start; compaction's holes)."""

from __future__ import annotations

import os
import socket

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from tests.support.kafka import create_topic, produce, produce_with_holes, running, tansu_binary


def test_the_binary_is_the_installed_packages_own() -> None:
    assert tansu_binary().is_file() and os.access(tansu_binary(), os.X_OK)


def _listening_on_all_interfaces(port: int) -> bool:
    """True when something answers on the port at an address of this host other than loopback."""
    try:
        other = socket.gethostbyname(socket.gethostname())
    except OSError:
        return False
    if other.startswith("127."):
        return False
    try:
        socket.create_connection((other, port), timeout=0.5).close()
    except OSError:
        return False
    return True


async def test_started_on_loopback_and_nothing_left_behind() -> None:
    with running() as broker:
        assert broker.process.poll() is None
        assert not _listening_on_all_interfaces(broker.broker_port)
        assert not _listening_on_all_interfaces(broker.shim.port)
        await create_topic(broker.bootstrap, "t", 2)
        [sent] = await produce(broker.bootstrap, "t", [(1, None, b"\x00\xff", [("h", b"\x01")])])
        assert (sent.partition, sent.offset) == (1, 0)
        log = broker.log
    assert broker.process.poll() is not None
    assert not log.exists()


async def _read(bootstrap: str, tp: TopicPartition, offset: int) -> list[int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="none"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        got = await consumer.getmany(tp, timeout_ms=2000)
        return [m.offset for m in got.get(tp, [])]
    finally:
        await consumer.stop()


async def test_a_compacted_batch_keeps_its_holes() -> None:
    with running() as broker:
        await create_topic(broker.bootstrap, "compacted", 1, {"cleanup.policy": "compact"})
        sent = await produce_with_holes(broker, "compacted", 0, [0, 2, 3, 5], 1_700_000_000_000)
        assert [s.offset for s in sent] == [0, 2, 3, 5]
        tp = TopicPartition("compacted", 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:  # Kafka's log end: one past the batch's last offset (Tansu alone answers 1)
            assert await consumer.end_offsets([tp]) == {tp: 6}
            assert await consumer.beginning_offsets([tp]) == {tp: 0}
        finally:
            await consumer.stop()
        assert await _read(broker.bootstrap, tp, 0) == [0, 2, 3, 5]
        assert await _read(broker.bootstrap, tp, 1) == [2, 3, 5]


async def test_the_shim_plays_a_moved_log_start() -> None:
    with running() as broker:
        await create_topic(broker.bootstrap, "moved", 1)
        await produce(broker.bootstrap, "moved", [(0, b"k", b"v%d" % i, []) for i in range(5)])
        broker.shim.move_log_start("moved", 0, 3)
        tp = TopicPartition("moved", 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="none"
        )
        await consumer.start()
        try:
            assert await consumer.beginning_offsets([tp]) == {tp: 3}
            assert await consumer.end_offsets([tp]) == {tp: 5}
            consumer.assign([tp])
            consumer.seek(tp, 1)
            with pytest.raises(OffsetOutOfRangeError):
                await consumer.getmany(tp, timeout_ms=2000)
        finally:
            await consumer.stop()
        assert await _read(broker.bootstrap, tp, 3) == [3, 4]
