"""The SQS consumer (`replayer run`) against moto over HTTP: settle rules, heartbeat, order, signals, replicas."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from replayer.aws import Clients
from replayer.config import Settings
from replayer.model import Outcome, OutcomeKind
from replayer.observe import Recorder
from replayer.settle import Action, decide, retry_delay
from replayer.sources import build_replayer
from replayer.sources.sqs import Service
from tests.support.aws import DynamoTable, client, keys, make_queue, queue_counts, send
from tests.support.faultproxy import FaultProxy, Rule, slow_shard
from tests.support.net import free_port, http_get
from tests.support.service import arrival, sample, settings, start_replayer, wait_for


@asynccontextmanager
async def consumer(config: Settings, **kw: Any) -> AsyncIterator[tuple[Service, Recorder]]:
    metrics = Recorder(prometheus=True)
    async with Clients() as clients:
        replayer, quarantine = build_replayer(config, clients, metrics)
        yield Service(config, replayer, recorder=metrics, quarantine=quarantine, **kw), metrics


# ---- the settle rule (pure)


def test_decide_deletes_only_settled_messages() -> None:
    replayed = Outcome(OutcomeKind.REPLAYED, None)
    lost_reported = Outcome(OutcomeKind.EXPIRED, None, report_uri="s3://b/k")
    lost_unreported = Outcome(OutcomeKind.PARTIAL, None, recovered=1)
    retry = Outcome(OutcomeKind.RETRY, None, reason="throttled")
    rejected = Outcome(OutcomeKind.REJECTED, None, reason="not allowed")
    assert decide([replayed, lost_reported], can_quarantine=False).action is Action.DELETE
    assert decide([replayed, lost_unreported], can_quarantine=True).action is Action.RETRY
    assert decide([replayed, retry, rejected], can_quarantine=True).action is Action.RETRY
    assert decide([replayed, rejected], can_quarantine=True).action is Action.QUARANTINE
    assert decide([replayed, rejected], can_quarantine=False).action is Action.LEAVE
    assert decide([], parse_error="bad", can_quarantine=False).action is Action.LEAVE
    assert decide([], parse_error="bad", can_quarantine=True).action is Action.QUARANTINE


def test_retry_delay_grows_and_respects_the_deadline() -> None:
    delays = [retry_delay(n, base=30, maximum=900) for n in range(1, 8)]
    assert delays == [30, 60, 120, 240, 480, 900, 900]
    now = time.time()
    assert retry_delay(6, base=30, maximum=900, deadline=now + 100, now=now) == 50
    assert retry_delay(3, base=30, maximum=900, deadline=now - 5, now=now) == 120


# ---- the loop against moto


async def test_replays_archives_and_deletes(table: DynamoTable, bucket: str, moto_endpoint: str) -> None:
    table.put(6)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 2, records), table.invocation_record(3, 5, records))
    config = settings(queue, f"s3://{bucket}/archive", allow_streams=(table.stream_arn,))
    async with consumer(config, burst=True) as (service, metrics):
        summary = await service.run()
    assert [o.kind for o in summary.outcomes] == [OutcomeKind.REPLAYED] * 2
    assert summary.messages["deleted"] == 2
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    assert len([k for k in keys(moto_endpoint, bucket, "archive/") if k.endswith("records.jsonl.gz")]) == 2
    assert sample(metrics, "replayer_messages_received_total") == 2
    assert sample(metrics, "replayer_records_recovered_total") == 6
    assert sample(metrics, "replayer_read_seconds_count") == 2


async def test_a_message_naming_several_ranges_is_deleted_once_all_are_settled(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    """One message (an SNS event) names ranges of two streams; reading one of them fails."""
    other = DynamoTable(moto_endpoint)
    table.put(2)
    other.put(2)
    queue = make_queue(moto_endpoint)
    two_ranges = {
        "Records": [
            {"EventSource": "aws:sns", "Sns": {"Message": json.dumps(table.invocation_record(0, 1))}},
            {"EventSource": "aws:sns", "Sns": {"Message": json.dumps(other.invocation_record(0, 1))}},
        ]
    }
    send(moto_endpoint, queue, two_ranges)
    proxy.add(Rule(slow_shard(other.stream_arn), respond=(400, {"__type": "LimitExceededException"})))
    config = settings(queue, f"s3://{bucket}", retry_base_seconds=60)
    async with consumer(config, burst=True) as (service, _):
        summary = await service.run()
    kinds = sorted(o.kind.value for o in summary.outcomes)
    assert kinds == ["replayed", "retry"]
    assert summary.messages.get("deleted", 0) == 0
    assert summary.messages["retried"] == 1
    assert queue_counts(moto_endpoint, queue) == (0, 1)  # back on the queue, after its delay


async def test_concurrency_is_bounded_and_used(bucket: str, moto_endpoint: str, proxy: FaultProxy) -> None:
    tables = [DynamoTable(moto_endpoint) for _ in range(6)]
    queue = make_queue(moto_endpoint)
    for t in tables:
        t.put(1)
        send(moto_endpoint, queue, t.invocation_record(0, 0))
        proxy.add(Rule(slow_shard(t.stream_arn), delay=0.4, times=1))
    async with consumer(settings(queue, f"s3://{bucket}", concurrency=3), burst=True) as (service, _):
        summary = await service.run()
    assert summary.peak_in_flight == 3
    assert summary.messages["deleted"] == 6
    assert len([k for k in keys(moto_endpoint, bucket) if k.endswith("records.jsonl.gz")]) == 6


async def test_earliest_deadline_first(table: DynamoTable, bucket: str, moto_endpoint: str) -> None:
    table.put(3)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    hours = {0: 1.0, 1: 20.0, 2: 10.0}  # record index -> arrived this many hours ago
    send(
        moto_endpoint,
        queue,
        *(
            table.invocation_record(i, i, records, approximateArrivalOfFirstRecord=arrival(h))
            for i, h in hours.items()
        ),
    )
    order: list[str] = []
    async with consumer(
        settings(queue, f"s3://{bucket}", concurrency=1),
        burst=True,
        on_outcome=lambda o: order.append(o.failure.start_sequence if o.failure else ""),
    ) as (service, _):
        summary = await service.run()
    by_age = [records[i]["dynamodb"]["SequenceNumber"] for i in (1, 2, 0)]
    assert order == by_age
    assert summary.messages["deleted"] == 3


async def test_heartbeat_keeps_a_slow_range_invisible(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    table.put(2)
    queue = make_queue(moto_endpoint, visibility=3)
    send(moto_endpoint, queue, table.invocation_record(0, 1))
    slow = proxy.add(Rule(slow_shard(table.stream_arn), delay=7.0, times=1))
    config = settings(queue, f"s3://{bucket}", visibility_timeout=3)
    async with consumer(config) as (service, _):
        running = asyncio.create_task(service.run())
        await wait_for(lambda: slow.hits == 1, "the slow read to start")
        # Without the heartbeat the 3 s visibility would lapse within this receive's wait.
        second = await asyncio.to_thread(
            client("sqs", moto_endpoint).receive_message,
            QueueUrl=queue,
            WaitTimeSeconds=5,
            VisibilityTimeout=1,
        )
        assert second.get("Messages", []) == []
        await wait_for(lambda: service.summary.messages.get("deleted", 0) == 1, "the slow range to finish")
        service.stop()
        summary = await running
    assert [o.kind for o in summary.outcomes] == [OutcomeKind.REPLAYED]
    assert proxy.count("ChangeMessageVisibilityBatch") >= 1
    assert queue_counts(moto_endpoint, queue) == (0, 0)


async def test_poison_and_forged_messages_are_quarantined_not_lost(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    other = DynamoTable(moto_endpoint)  # a stream the configuration does not allow
    table.put(1)
    other.put(1)
    queue = make_queue(moto_endpoint)
    forged = other.invocation_record(0, 0)
    bad_arn = table.invocation_record(0, 0)
    bad_arn["DDBStreamBatchInfo"]["streamArn"] = (
        "arn:aws:dynamodb:us-east-1:123456789012:table/../../x/stream/1"
    )
    send(
        moto_endpoint,
        queue,
        "not json at all",
        {"hello": "world"},
        forged,
        bad_arn,
        table.invocation_record(0, 0),
    )
    config = settings(
        queue,
        f"s3://{bucket}/archive",
        allow_streams=(table.stream_arn,),
        quarantine=f"s3://{bucket}/quarantine",
    )
    async with consumer(config, burst=True) as (service, metrics):
        summary = await service.run()
    assert summary.messages["quarantined"] == 4
    assert summary.messages["deleted"] == 5
    held = [
        json.loads(client("s3", moto_endpoint).get_object(Bucket=bucket, Key=k)["Body"].read())
        for k in keys(moto_endpoint, bucket, "quarantine/")
    ]
    assert len(held) == 4
    bodies = {d["body"]: d["reason"] for d in held}
    assert "not json at all" in bodies
    assert "not in --allow-stream" in bodies[json.dumps(forged)]
    assert all(d["reason"] and d["message_id"] for d in held)
    assert not [k for k in keys(moto_endpoint, bucket, "archive/") if other.name in k]
    assert sample(metrics, "replayer_messages_quarantined_total") == 4


async def test_without_a_quarantine_nothing_rejected_is_deleted(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    other = DynamoTable(moto_endpoint)
    queue = make_queue(moto_endpoint)
    send(
        moto_endpoint,
        queue,
        "{broken",
        other.invocation_record(0, 0, records=[{"dynamodb": {"SequenceNumber": "1" * 21}}]),
    )
    # No retry delay: the left messages come straight back during the drain, which must still end.
    config = settings(queue, f"s3://{bucket}", allow_streams=(table.stream_arn,), retry_base_seconds=0)
    async with consumer(config, burst=True) as (service, _):
        summary = await service.run()
    assert summary.messages.get("deleted", 0) == 0
    assert summary.messages["left"] == 2
    visible, invisible = queue_counts(moto_endpoint, queue)
    assert visible + invisible == 2


async def test_sqs_quarantine_carries_the_reason(table: DynamoTable, bucket: str, moto_endpoint: str) -> None:
    queue = make_queue(moto_endpoint)
    quarantine = make_queue(moto_endpoint)
    send(moto_endpoint, queue, '{"Records": "nope"}')
    async with consumer(settings(queue, f"s3://{bucket}", quarantine=quarantine), burst=True) as (service, _):
        summary = await service.run()
    assert summary.messages["quarantined"] == 1
    kept = client("sqs", moto_endpoint).receive_message(
        QueueUrl=quarantine, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    assert kept[0]["Body"] == '{"Records": "nope"}'
    assert "Records" in kept[0]["MessageAttributes"]["replayer-reason"]["StringValue"]
    assert queue_counts(moto_endpoint, queue) == (0, 0)


async def test_lost_records_need_a_durable_report(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    """A range whose records are gone: deleted with an S3 loss report, never with only stdout."""
    proxy.add(
        Rule(
            lambda r: (
                r.operation == "GetShardIterator"
                and r.json().get("ShardIteratorType") == "AT_SEQUENCE_NUMBER"
            ),
            respond=(400, {"__type": "TrimmedDataAccessException", "message": "trimmed"}),
        )
    )
    table.put(2)
    first = int(table.stream_records()[0]["dynamodb"]["SequenceNumber"])
    gone = table.invocation_record(
        0, 0, startSequenceNumber=str(first - 20), endSequenceNumber=str(first - 10)
    )
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, gone)
    async with consumer(settings(queue, "-"), burst=True) as (service, metrics):
        summary = await service.run()
    assert [o.kind for o in summary.outcomes] == [OutcomeKind.EXPIRED]
    assert summary.messages["retried"] == 1
    assert queue_counts(moto_endpoint, queue) == (0, 1)
    client("sqs", moto_endpoint).purge_queue(QueueUrl=queue)
    send(moto_endpoint, queue, gone)
    async with consumer(settings(queue, f"s3://{bucket}"), burst=True) as (service, metrics):
        summary = await service.run()
    assert summary.outcomes[0].report_uri and summary.outcomes[0].report_uri.endswith("loss-report.json")
    assert summary.messages["deleted"] == 1
    assert sample(metrics, "replayer_records_lost_total") == 1


async def test_stop_releases_unfinished_messages_at_once(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 0))
    slow = proxy.add(Rule(slow_shard(table.stream_arn), delay=8.0, times=1))
    config = replace(settings(queue, f"s3://{bucket}"), grace_seconds=0.2, visibility_timeout=600)
    async with consumer(config) as (service, _):
        running = asyncio.create_task(service.run())
        await wait_for(lambda: slow.hits == 1, "the slow read to start")
        service.stop()
        summary = await running
    assert summary.messages["released"] == 1
    assert queue_counts(moto_endpoint, queue) == (1, 0)  # visible now, not in ten minutes


# ---- as a real process


def start_service(
    endpoint: str, *args: str, port: int, log: Path, max_open_files: int | None = None
) -> subprocess.Popen[bytes]:
    """`python -m replayer run ...` with its HTTP server on `port`; its JSON logs go to `log`."""
    return start_replayer(
        endpoint,
        *("run", "--http-port", str(port), "--http-host", "127.0.0.1", "--wait-seconds", "1"),
        *("--log-level", "info", "--allow-stream", "*", *args),
        log=log,
        max_open_files=max_open_files,
    )


def scrape(port: int, name: str) -> float:
    """One metric from a running service's /metrics (-1 while it does not answer)."""
    status, text = http_get(port, "/metrics")
    return metric(text, name) if status == 200 else -1


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_sigterm_mid_work_loses_nothing(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    slow_table = DynamoTable(moto_endpoint)
    table.put(4)
    slow_table.put(1)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(
        moto_endpoint,
        queue,
        table.invocation_record(0, 1, records),
        table.invocation_record(2, 3, records),
        slow_table.invocation_record(0, 0),
    )
    slow = proxy.add(Rule(slow_shard(slow_table.stream_arn), delay=20.0, times=1))
    port = free_port()
    log = tmp_path / "service.log"
    process = start_service(
        proxy.url,
        "--queue",
        queue,
        "--to",
        f"s3://{bucket}",
        "--concurrency",
        "3",
        "--grace-seconds",
        "1",
        "--visibility-timeout",
        "300",
        port=port,
        log=log,
    )
    try:
        await wait_for(
            lambda: slow.hits == 1 and scrape(port, "replayer_messages_deleted_total") == 2, "two ranges done"
        )
        assert queue_counts(moto_endpoint, queue) == (0, 1)
        status, text = await asyncio.to_thread(http_get, port, "/metrics")
        assert status == 200
        assert metric(text, "replayer_messages_received_total") == 3
        assert metric(text, "replayer_messages_deleted_total") == 2
        assert metric(text, "replayer_ranges_in_flight") == 1
        assert metric(text, "replayer_records_recovered_total") == 4
        assert 0 < metric(text, "replayer_seconds_to_nearest_expiry") <= 24 * 3600
        assert metric(text, "replayer_read_seconds_count") == 2
        assert await asyncio.to_thread(http_get, port, "/healthz") == (200, "ok\n")
        assert (await asyncio.to_thread(http_get, port, "/readyz"))[0] == 200
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = log.read_text()
    assert code == 0, stderr
    assert "released_unfinished" in stderr
    # The slow range's message is visible again at once (its visibility was 300 s).
    assert queue_counts(moto_endpoint, queue) == (1, 0)
    archived = [k for k in keys(moto_endpoint, bucket) if k.endswith("invocation.json")]
    assert len(archived) == 2 and not any(slow_table.name in k for k in archived)


async def test_three_replicas_share_one_queue(bucket: str, moto_endpoint: str, tmp_path: Path) -> None:
    tables = [DynamoTable(moto_endpoint) for _ in range(4)]
    queue = make_queue(moto_endpoint)
    expected = 0
    for t in tables:
        t.put(6)
        records = t.stream_records()
        send(moto_endpoint, queue, *(t.invocation_record(i, i + 1, records) for i in range(0, 6, 2)))
        expected += 3
    ports = [free_port() for _ in range(3)]
    processes = [
        start_service(
            moto_endpoint,
            "--queue",
            queue,
            "--to",
            f"s3://{bucket}",
            "--concurrency",
            "2",
            "--prefetch",
            "1",
            port=port,
            log=tmp_path / f"replica-{port}.log",
        )
        for port in ports
    ]
    try:
        await wait_for(
            lambda: sum(scrape(port, "replayer_messages_deleted_total") for port in ports) == expected,
            "every message to be deleted",
            limit=60,
        )
        assert queue_counts(moto_endpoint, queue) == (0, 0)
        scraped = [(await asyncio.to_thread(http_get, port, "/metrics"))[1] for port in ports]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(p.wait, 30) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0, 0]
    assert sum(metric(text, "replayer_messages_deleted_total") for text in scraped) == expected
    # Nothing was worked twice: no delivery found its range already archived.
    assert all('already_there="true"' not in text for text in scraped)
    assert len([k for k in keys(moto_endpoint, bucket) if k.endswith("records.jsonl.gz")]) == expected


# ---- #21.4: a service that stays up


def half_sent(port: int, count: int) -> list[socket.socket]:
    """`count` connections to the port, each with a request begun and never finished (the ones the
    listen backlog will not take are left out)."""
    held = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: replayer\r\nX-Slow: ")
        except OSError:
            s.close()
            continue
        held.append(s)
    return held


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def test_idle_half_sent_connections_at_a_low_descriptor_limit_leave_the_service_serving_and_draining(
    table: DynamoTable, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """#21.4: 600 half-sent requests held open against `replayer run` limited to 256 descriptors:
    it keeps serving /healthz and draining the queue, closes what it cannot hold, logs a bounded
    number of lines, and stops cleanly."""
    table.put(4)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    port = free_port()
    log = tmp_path / "service.log"
    process = start_service(
        moto_endpoint, "--queue", queue, "--to", f"s3://{bucket}", port=port, log=log, max_open_files=256
    )
    held: list[socket.socket] = []
    try:
        await wait_for(lambda: http_get(port, "/healthz")[0] == 200, "the service listening")
        held = await asyncio.to_thread(half_sent, port, 600)
        assert len(held) > 256  # more than the process may hold descriptors for
        send(
            moto_endpoint,
            queue,
            table.invocation_record(0, 1, records),
            table.invocation_record(2, 3, records),
        )
        await wait_for(
            lambda: scrape(port, "replayer_messages_deleted_total") == 2, "both messages settled", 90
        )
        assert await asyncio.to_thread(http_get, port, "/healthz") == (200, "ok\n")
        assert queue_counts(moto_endpoint, queue) == (0, 0)
        # The ones past the cap were closed to make room; the rest once idle too long.
        await wait_for(lambda: all(closed_by_peer(s) for s in held), "the held connections closed", 60)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        for s in held:
            s.close()
        if process.poll() is None:
            process.kill()
    stderr = log.read_text()
    assert code == 0, stderr[-3000:]
    assert len(stderr.splitlines()) < 200, stderr[-3000:]  # no flood of lines
    archived = [k for k in keys(moto_endpoint, bucket) if k.endswith("invocation.json")]
    assert len(archived) == 2


async def test_status_is_gathered_once_for_many_requests_and_can_be_turned_off() -> None:
    """#21.4: /status answers from a short cache (one gathering however many ask); off, not served."""
    from replayer.config import load
    from replayer.observe.http import HttpServer

    gathered = 0

    async def status() -> dict[str, Any]:
        nonlocal gathered
        gathered += 1
        await asyncio.sleep(0.2)
        return {"queue": {"visible": 1}}

    server = HttpServer(
        Recorder(prometheus=True).registry, alive=lambda: True, ready=lambda: True, host="127.0.0.1",
        port=0, status=status,
    )  # fmt: skip
    port = await server.start()
    try:
        answers = await asyncio.gather(*(asyncio.to_thread(http_get, port, "/status") for _ in range(20)))
    finally:
        await server.close()
    assert {a[0] for a in answers} == {200} and json.loads(answers[0][1]) == {"queue": {"visible": 1}}
    assert gathered == 1

    async def failing() -> dict[str, Any]:
        nonlocal gathered
        gathered += 1
        raise RuntimeError("no answer")

    gathered = 0
    broken = HttpServer(
        Recorder(prometheus=True).registry, alive=lambda: True, ready=lambda: True, host="127.0.0.1",
        port=0, status=failing,
    )  # fmt: skip
    port = await broken.start()
    try:
        answers = [await asyncio.to_thread(http_get, port, "/status") for _ in range(5)]
    finally:
        await broken.close()
    assert {a[0] for a in answers} == {503} and "no answer" in answers[0][1]
    assert gathered == 1  # a failed gathering is kept as long as an answer

    off = HttpServer(Recorder(prometheus=True).registry, alive=lambda: True, ready=lambda: True, port=0)
    port = await off.start()
    try:
        assert (await asyncio.to_thread(http_get, port, "/status"))[0] == 404
        assert (await asyncio.to_thread(http_get, port, "/healthz")) == (200, "ok\n")
    finally:
        await off.close()
    env = {
        "REPLAYER_QUEUE": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "REPLAYER_TO": "-",
        "REPLAYER_ALLOW_STREAMS": "*",
    }
    assert load("run", {}, env).status_endpoint is True
    assert load("run", {}, {**env, "REPLAYER_STATUS_ENDPOINT": "off"}).status_endpoint is False
    assert load("run", {"status_endpoint": "off"}, env).status_endpoint is False


async def test_no_descriptor_left_fails_receives_but_never_ends_the_receive_loop(
    table: DynamoTable, bucket: str, moto_endpoint: str, capsys: Any
) -> None:
    """#21.4: while every file descriptor of the process is taken (moto's too: it runs in this
    process), receives fail (EMFILE) and so may logging; the loop logs once, backs off and keeps
    going, and drains once descriptors are back."""
    import resource

    table.put(4)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    config = settings(queue, f"s3://{bucket}", retry_base_seconds=0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    metrics = Recorder(prometheus=True)
    # Short socket timeouts: a request whose connection moto cannot accept fails in seconds.
    async with Clients(connect_timeout=2.0, read_timeout=3.0, max_attempts=1) as clients:
        replayer, quarantine = build_replayer(config, clients, metrics)
        service = Service(config, replayer, recorder=metrics, quarantine=quarantine)
        running = asyncio.create_task(service.run())
        send(moto_endpoint, queue, table.invocation_record(0, 1, records))
        await wait_for(lambda: sample(metrics, "replayer_messages_deleted_total") == 1, "a first message", 60)
        taken: list[int] = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
        try:
            while True:  # every descriptor the process may still open
                taken.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            await wait_for(lambda: not service.ready, "a receive failing", 120)
            assert not running.done() and service.alive
        finally:
            for fd in taken:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        send(moto_endpoint, queue, table.invocation_record(2, 3, records))
        await wait_for(
            lambda: sample(metrics, "replayer_messages_deleted_total") == 2, "the next message", 120
        )
        assert service.ready
        service.stop()
        await running
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "receive_failed" in line]
    assert 1 <= len(lines) <= 5, lines  # once per distinct error in a row, not once per attempt
