"""`replayer audit`: Lambda's on-failure counts (written to CloudWatch by the test) against the archive."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.archive.store import FileStore
from replayer.archive.write import write_range
from replayer.aws import Clients
from replayer.cli import app
from replayer.core import Replayer
from replayer.model import AT_RISK, Failure, Gap, SourceMapping, StreamKind, StreamRecord
from replayer.parse import parse_message
from replayer.sinks import FileSink
from tests.support.aws import DynamoTable, make_queue, send
from tests.support.watch import function, put_metric

runner = CliRunner()


def archive_failure(
    table: DynamoTable, root: Path, first: int, last: int, *, uuid: str, function_arn: str, **changes: Any
) -> str:
    """Replay the failure of records first..last (its mapping known) into a file archive; its range id."""
    record = table.invocation_record(first, last)
    record["requestContext"]["functionArn"] = function_arn
    (failure,) = parse_message(record)
    mapping = SourceMapping(found=True, kind="lambda-esm", arn=function_arn, uuid=uuid, batch_size=100)
    failure = dataclasses.replace(failure, mapping=mapping, **changes)

    async def go() -> str:
        async with Clients() as clients:
            outcome = await Replayer(
                clients, [FileSink(root)], allow=AllowList.of(["*"]), find_mappings=False
            ).replay(failure)
        assert outcome.kind.value in ("replayed", "partial"), outcome.describe()
        return failure.range_id

    return asyncio.run(go())


def audit(*args: str) -> Any:
    return runner.invoke(app, ["audit", *args], catch_exceptions=False)


def test_a_difference_is_shown_and_says_where_to_look(
    table: DynamoTable, moto_endpoint: str, tmp_path: Path, monkeypatch: Any
) -> None:
    table.put(6)
    consumer = function(moto_endpoint)
    name = consumer.split(":")[6]
    matching, short = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    archive_failure(table, tmp_path, 0, 1, uuid=matching, function_arn=consumer)
    archive_failure(table, tmp_path, 2, 4, uuid=short, function_arn=consumer)
    put_metric(
        moto_endpoint, "OnFailureDestinationDeliveredEventCount", 2, {"EventSourceMappingUUID": matching}
    )
    # Lambda says it sent 7 records of the second mapping and dropped 1: the archive has 3 of them
    put_metric(moto_endpoint, "OnFailureDestinationDeliveredEventCount", 4, {"EventSourceMappingUUID": short})
    put_metric(moto_endpoint, "OnFailureDestinationDeliveredEventCount", 3, {"EventSourceMappingUUID": short})
    put_metric(moto_endpoint, "DroppedEventCount", 1, {"FunctionName": name, "EventSourceMappingUUID": short})
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(5, 5))

    result = audit("--from", f"file:{tmp_path}", "--queue", queue, "--json")
    assert result.exit_code == 1, result.output
    rows = {row["uuid"]: row for row in json.loads(result.stdout)["mappings"]}
    assert (rows[matching]["lambda_delivered"], rows[matching]["archived"], rows[matching]["difference"]) == (
        2,
        2,
        0,
    )
    assert rows[matching]["where"].startswith("matches; replayer why ")
    assert rows[matching]["where"].endswith("shows why its latest range failed")
    low = rows[short]
    assert (low["lambda_delivered"], low["lambda_dropped"], low["archived"], low["difference"]) == (
        7,
        1,
        3,
        4,
    )
    assert "4 records sent on failure are not in the archive" in low["where"]
    assert "failure queue: 1 waiting" in low["where"] and "dropped 1 records" in low["where"]

    table_view = audit("--from", f"file:{tmp_path}", "--queue", queue)
    assert table_view.exit_code == 1
    lines = table_view.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines), lines
    (row,) = [line for line in lines if line.startswith(short[:8])]
    assert row.split()[2:7] == ["7", "1", "3", "0", "4"]


def test_matching_counts_exit_zero_and_unknown_metrics_are_named(
    table: DynamoTable, moto_endpoint: str, tmp_path: Path
) -> None:
    table.put(2)
    consumer = function(moto_endpoint)
    uuid = "abcdefab-2222-3333-4444-555555555555"
    archive_failure(table, tmp_path, 0, 1, uuid=uuid, function_arn=consumer)
    result = audit("--from", f"file:{tmp_path}", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["mappings"]
    assert (
        row["lambda_delivered"] is None and "enable its metrics (MetricsConfig: EventCount)" in row["where"]
    )
    put_metric(moto_endpoint, "OnFailureDestinationDeliveredEventCount", 2, {"EventSourceMappingUUID": uuid})
    assert audit("--from", f"file:{tmp_path}").exit_code == 0
    since = datetime(2020, 1, 1, tzinfo=UTC).isoformat()  # a longer window: the same counts
    assert audit("--from", f"file:{tmp_path}", "--since", since).exit_code == 0
    bad = audit("--from", f"file:{tmp_path}", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_lost_records_an_at_risk_window_holds_are_said_so(moto_endpoint: str, tmp_path: Path) -> None:
    """A failure record naming records gone from the stream, which an at-risk window had archived."""
    stream = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"
    uuid = "12345678-2222-3333-4444-555555555555"
    mapping = SourceMapping(
        found=True, kind="lambda-esm", uuid=uuid, arn="arn:aws:lambda:us-east-1:123456789012:function:f"
    )
    now = datetime.now(UTC)

    def failure(start: int, end: int, **changes: Any) -> Failure:
        return Failure(StreamKind.DYNAMODB, stream, "shardId-1", str(start), str(end), timestamp=now, mapping=mapping,
                       **changes)  # fmt: skip

    def record(seq: int) -> StreamRecord:
        return StreamRecord(str(seq), json.dumps({"dynamodb": {"SequenceNumber": str(seq)}}).encode())

    async def write() -> None:
        store = FileStore(tmp_path)
        await write_range(
            store, failure(100, 120, condition=AT_RISK), [[record(100), record(110), record(120)]], (), ()
        )
        await write_range(store, failure(110, 120, batch_size=2), [], (Gap("110", "120", "trimmed"),), ())

    asyncio.run(write())
    result = audit("--from", f"file:{tmp_path}", "--json")
    (row,) = json.loads(result.stdout)["mappings"]
    assert (row["at_risk_records"], row["lost"], row["lost_but_rescued"]) == (3, 2, 2)
    assert "2 of the records reported lost are in at-risk windows" in row["where"]
