"""`replayer status` and the service's /status: figures read against queues and an archive the test prepares."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.core import Replayer
from replayer.parse import parse_message
from replayer.sinks import FileSink
from replayer.status import SHORTEST_RETENTION, gather_status
from tests.support.aws import DynamoTable, client, send, unique
from tests.support.net import free_port, http_get
from tests.support.service import start_replayer

runner = CliRunner()


def run(*args: str) -> Any:
    from replayer.cli import app

    return runner.invoke(app, list(args), catch_exceptions=False)


def queues(endpoint: str) -> tuple[str, str, str]:
    """A failure queue with a dead-letter queue, and a quarantine queue."""
    sqs = client("sqs", endpoint)
    dlq = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    queue = sqs.create_queue(QueueName=unique("failures"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    quarantine = sqs.create_queue(QueueName=unique("quarantine"))["QueueUrl"]
    return queue, dlq, quarantine


async def archive(table: DynamoTable, root: Path) -> Path:
    """Two complete ranges (one re-driven) and one damaged manifest, in a file archive."""
    table.put(5)
    records = table.stream_records()
    async with Clients() as clients:
        replayer = Replayer(clients, [FileSink(root)], allow=AllowList.of(["*"]))
        for first, last in ((0, 2), (3, 4)):
            (failure,) = parse_message(table.invocation_record(first, last, records))
            assert (await replayer.replay(failure)).kind.value == "replayed"
    manifests = sorted(root.rglob("invocation.json"))
    marker = manifests[0].parent / "redriven" / "repair.json"
    marker.parent.mkdir()
    marker.write_text("{}")
    damaged = manifests[0].parent.parent / "1-2"
    damaged.mkdir()
    (damaged / "invocation.json").write_text("not a manifest")
    return root


def test_status_reads_queues_and_the_archive(table: DynamoTable, moto_endpoint: str, tmp_path: Path) -> None:
    queue, dlq, quarantine = queues(moto_endpoint)
    send(moto_endpoint, queue, {"a": 1}, {"b": 2}, {"c": 3})
    client("sqs", moto_endpoint).receive_message(QueueUrl=queue, MaxNumberOfMessages=1, VisibilityTimeout=300)
    send(moto_endpoint, dlq, {"d": 4})
    send(moto_endpoint, quarantine, {"e": 5}, {"f": 6})
    root = asyncio.run(archive(table, tmp_path / "archive"))
    result = run("status", "--queue", queue, "--quarantine", quarantine, "--from", f"file:{root}", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["queue"]["visible"], document["queue"]["in_flight"]) == (2, 1)
    assert document["dead_letter_queue"]["url"] == dlq and document["dead_letter_queue"]["visible"] == 1
    assert document["quarantine"]["visible"] == 2
    inventory = document["archive"]
    assert (inventory["ranges"], inventory["replayed"], inventory["partial"], inventory["expired"]) == (
        2,
        2,
        0,
        0,
    )
    assert (inventory["redriven"], inventory["damaged"], inventory["records"]) == (1, 1, 5)
    # moto keeps no SQS metrics in CloudWatch: the oldest age, and so the expiry, are unknown
    assert document["queue"]["oldest_age_seconds"] is None and document["nearest_expiry"]["seconds"] is None
    table_output = run("status", "--queue", queue, "--from", f"file:{root}")
    assert table_output.exit_code == 0
    assert "failure queue: 2 visible, 1 in flight" in table_output.stdout
    assert "archive: 2 ranges (2 replayed" in table_output.stdout and "5 records" in table_output.stdout


async def test_the_nearest_expiry_comes_from_the_oldest_message(moto_endpoint: str) -> None:
    queue, _, _ = queues(moto_endpoint)
    name = queue.rsplit("/", 1)[-1]
    age = 20 * 3600.0
    client("cloudwatch", moto_endpoint).put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": name}],
                "Timestamp": datetime.now(UTC),
                "Value": age,
            }
        ],
    )
    async with Clients() as clients:
        document = await gather_status(clients, queue=queue)
        held = await gather_status(clients, queue=queue, held_expiry=600.0)
    assert document["queue"]["oldest_age_seconds"] == age
    assert document["nearest_expiry"]["seconds"] == SHORTEST_RETENTION.total_seconds() - age
    assert held["nearest_expiry"]["seconds"] == 600.0  # a held range expiring sooner wins


def test_status_needs_something_to_look_at() -> None:
    result = run("status")
    assert result.exit_code == 2 and "--queue" in result.output


def test_the_service_serves_status_and_the_expiry_metric(moto_endpoint: str, tmp_path: Path) -> None:
    queue, _, quarantine = queues(moto_endpoint)
    send(moto_endpoint, quarantine, {"e": 5})
    port = free_port()
    process = start_replayer(
        moto_endpoint,
        *("run", "--queue", queue, "--to", f"file:{tmp_path}", "--quarantine", quarantine),
        *("--http-port", str(port), "--http-host", "127.0.0.1", "--wait-seconds", "1", "--no-preflight"),
        *("--allow-stream", "*"),
        log=tmp_path / "log",
    )
    try:
        deadline = time.monotonic() + 60
        status, body = http_get(port, "/status")
        while status != 200 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            status, body = http_get(port, "/status")
        assert status == 200, (tmp_path / "log").read_text()[-2000:]
        document = json.loads(body)
        assert document["queue"]["url"] == queue and document["quarantine"]["visible"] == 1
        assert document["service"] == {"held": 0, "in_flight": 0, "seconds_to_nearest_expiry": None}
        _, metrics = http_get(port, "/metrics")
        assert "replayer_seconds_to_nearest_expiry +Inf" in metrics
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_status_counts_a_folder_whose_records_contradict_its_manifest_as_damaged(
    table: DynamoTable, tmp_path: Path, moto_endpoint: str
) -> None:
    root = asyncio.run(archive(table, tmp_path / "archive"))
    records = sorted(root.rglob("records.jsonl.gz"))[1]
    records.write_bytes(gzip.compress(gzip.decompress(records.read_bytes()).replace(b"item", b"evil")))

    result = run("status", "--from", f"file:{root}", "--json")
    inventory = json.loads(result.stdout)["archive"]
    assert (inventory["ranges"], inventory["damaged"], inventory["records"]) == (1, 2, 3)
    shown = run("status", "--from", f"file:{root}").stdout
    assert "archive: 1 ranges" in shown and "2 damaged" in shown

    # With a manifest key, folders whose manifest carries no valid MAC are damaged too.
    kms = client("kms", moto_endpoint)
    key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    inventory = json.loads(run("status", "--from", f"file:{root}", "--json", "--manifest-key", key).stdout)[
        "archive"
    ]
    assert (inventory["ranges"], inventory["damaged"]) == (0, 3)
