"""Settled messages deleted and delayed ten to a call, receives that keep the workers fed (#26),
against moto over HTTP through the test proxy."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from replayer.aws import Clients, SqsQueue
from replayer.observe import Recorder
from replayer.settle import Action, Settler
from replayer.settle.batch import Batches, EntryFailed
from replayer.sources import build_replayer
from replayer.sources.sqs import Service
from tests.support.aws import DynamoTable, client, make_queue, queue_counts, send
from tests.support.faultproxy import FaultProxy, Request, Rule, op
from tests.support.service import settings


def _received(endpoint: str, queue_url: str, count: int) -> list[str]:
    """Receipt handles of `count` messages received (and so made invisible) from the queue."""
    sqs = client("sqs", endpoint)
    receipts: list[str] = []
    while len(receipts) < count:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300)
        receipts += [m["ReceiptHandle"] for m in answer.get("Messages", [])]
    return receipts


async def test_deletes_settling_together_go_ten_to_a_call(moto_endpoint: str, proxy: FaultProxy) -> None:
    queue_url = make_queue(moto_endpoint)
    send(moto_endpoint, queue_url, *(f"m{i}" for i in range(25)))
    receipts = _received(moto_endpoint, queue_url, 25)
    async with Clients() as clients:
        batches = Batches(await SqsQueue.open(clients, queue_url))
        await asyncio.gather(*(batches.delete(r) for r in receipts))
    assert proxy.count("DeleteMessageBatch") == 3  # 10 + 10 + 5, all in flight at once
    assert proxy.count("DeleteMessage") == 0
    assert queue_counts(moto_endpoint, queue_url) == (0, 0)


async def test_each_entry_of_a_batch_learns_its_own_fate(moto_endpoint: str, proxy: FaultProxy) -> None:
    """SQS answers a batch call entry by entry: the entry it failed raises, the others do not."""
    queue_url = make_queue(moto_endpoint)
    send(moto_endpoint, queue_url, *(f"m{i}" for i in range(4)))
    receipts = _received(moto_endpoint, queue_url, 4)

    def fail_entry_2(request: Request, answer: Any) -> Any:
        answer["Successful"] = [e for e in answer.get("Successful", []) if e["Id"] != "2"]
        answer["Failed"] = [
            {"Id": "2", "Code": "ReceiptHandleIsInvalid", "SenderFault": True, "Message": "x"}
        ]
        return answer

    proxy.add(Rule(op("DeleteMessageBatch"), rewrite=fail_entry_2))
    async with Clients() as clients:
        batches = Batches(await SqsQueue.open(clients, queue_url))
        results = await asyncio.gather(*(batches.delete(r) for r in receipts), return_exceptions=True)
    assert results[:2] == [None, None] and results[3] is None
    assert isinstance(results[2], EntryFailed) and str(results[2]) == "ReceiptHandleIsInvalid"


async def test_a_failed_batch_call_fails_every_entry_in_it_and_deletes_nothing_else(
    moto_endpoint: str, proxy: FaultProxy
) -> None:
    queue_url = make_queue(moto_endpoint)
    send(moto_endpoint, queue_url, *(f"m{i}" for i in range(3)))
    receipts = _received(moto_endpoint, queue_url, 3)
    proxy.add(Rule(op("DeleteMessageBatch"), respond=(400, {"__type": "AccessDenied", "message": "no"})))
    async with Clients() as clients:
        batches = Batches(await SqsQueue.open(clients, queue_url))
        results = await asyncio.gather(*(batches.delete(r) for r in receipts), return_exceptions=True)
    assert all(isinstance(r, Exception) and not isinstance(r, EntryFailed) for r in results)
    assert queue_counts(moto_endpoint, queue_url) == (0, 3)  # still there, invisible: they come back


async def test_retried_messages_get_their_own_delays_in_one_call(
    moto_endpoint: str, proxy: FaultProxy
) -> None:
    queue_url = make_queue(moto_endpoint)
    send(moto_endpoint, queue_url, *(f"m{i}" for i in range(4)))
    receipts = _received(moto_endpoint, queue_url, 4)
    async with Clients() as clients:
        batches = Batches(await SqsQueue.open(clients, queue_url))
        await asyncio.gather(
            *(batches.change_visibility(r, 0 if i % 2 else 600) for i, r in enumerate(receipts))
        )
    assert proxy.count("ChangeMessageVisibilityBatch") == 1
    assert proxy.count("ChangeMessageVisibility") == 0
    assert queue_counts(moto_endpoint, queue_url) == (2, 2)


async def test_a_drain_deletes_in_batches_and_receives_several_at_once(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    """30 one-record ranges: while the queue is deep, receives go out together; the deletes of
    messages settling while a delete call is in flight go in the next call, together."""
    table.put(30)
    records = table.stream_records()
    queue_url = make_queue(moto_endpoint)
    send(moto_endpoint, queue_url, *(table.invocation_record(i, i, records) for i in range(30)))
    lock = threading.Lock()
    receives = {"now": 0, "most": 0}

    def arrive(request: Request) -> Request:
        with lock:
            receives["now"] += 1
            receives["most"] = max(receives["most"], receives["now"])
        threading.Event().wait(0.2)  # holds each receive a moment: ones sent together meet here
        return request

    def leave(request: Request, answer: Any) -> Any:
        with lock:
            receives["now"] -= 1
        return answer

    proxy.add(Rule(op("ReceiveMessage"), modify_request=arrive, rewrite=leave))
    proxy.add(Rule(op("DeleteMessageBatch"), delay=0.2))  # a round trip: deletes settling meanwhile gather
    config = settings(queue_url, f"s3://{bucket}/archive", allow_streams=(table.stream_arn,), concurrency=16)
    recorder = Recorder(prometheus=True)
    async with Clients() as clients:
        replayer, quarantine = build_replayer(config, clients, recorder)
        service = Service(config, replayer, recorder=recorder, quarantine=quarantine, burst=True)
        summary = await service.run()
    assert summary.messages["deleted"] == 30
    assert queue_counts(moto_endpoint, queue_url) == (0, 0)
    assert receives["most"] >= 2
    assert proxy.count("DeleteMessage") == 0
    assert 1 <= proxy.count("DeleteMessageBatch") < 30


@pytest.mark.parametrize("fails", [False, True])
async def test_the_settler_counts_a_delete_only_once_sqs_took_it(
    moto_endpoint: str, proxy: FaultProxy, fails: bool
) -> None:
    from replayer.model import Outcome, OutcomeKind
    from replayer.parse import queue_message

    queue_url = make_queue(moto_endpoint)
    send(moto_endpoint, queue_url, "m")
    answer = client("sqs", moto_endpoint).receive_message(
        QueueUrl=queue_url, VisibilityTimeout=300, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )
    if fails:
        proxy.add(Rule(op("DeleteMessageBatch"), respond=(400, {"__type": "AccessDenied", "message": "no"})))
    recorder = Recorder()
    settler = Settler(
        recorder=recorder, quarantine=None, retry_base_seconds=1, retry_max_seconds=2, deletes=True
    )
    async with Clients() as clients:
        queue = await SqsQueue.open(clients, queue_url)
        decision = await settler.settle(
            queue_message(answer["Messages"][0]), [Outcome(OutcomeKind.REPLAYED, None)], queue=queue
        )
    assert decision.action is Action.DELETE
    assert recorder.tally.counts["messages_deleted"] == (0 if fails else 1)
    assert queue_counts(moto_endpoint, queue_url) == (0, 1 if fails else 0)
