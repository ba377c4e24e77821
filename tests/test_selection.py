"""Choosing what to re-drive: --where, --since/--until, --shard, --limit, and dry runs that show it.

Streams live in moto; the repair function runs in ministack and keeps what it received.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.cli import app
from replayer.core import Replayer
from replayer.errors import ConfigError
from replayer.model import StreamKind, StreamRecord
from replayer.parse import parse_message
from replayer.selection import Selection, parse_moment, read_pattern
from replayer.sinks import FileSink
from tests.support.aws import DynamoTable
from tests.support.ministack import RepairFunction

runner = CliRunner()
HOT = '{"dynamodb": {"NewImage": {"payload": {"S": ["hot"]}}}}'


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def ddb(seq: int, payload: str, at: float) -> StreamRecord:
    record = {
        "eventName": "INSERT",
        "dynamodb": {
            "SequenceNumber": str(seq),
            "ApproximateCreationDateTime": at,
            "NewImage": {"payload": {"S": payload}},
        },
    }
    return StreamRecord(str(seq), json.dumps(record).encode())


def test_where_since_until_and_limit_on_records() -> None:
    records = [ddb(1, "hot", 100.0), ddb(2, "cold", 200.0), ddb(3, "hot", 300.0), ddb(4, "hot", 400.0)]
    assert [r.sequence for r in Selection.of(where=HOT).matching(StreamKind.DYNAMODB, records)] == [1, 3, 4]
    window = Selection.of(since="1970-01-01T00:03:20", until="1970-01-01T00:06:40")  # 200 <= t < 400
    assert [r.sequence for r in window.matching(StreamKind.DYNAMODB, records)] == [2, 3]
    limited = Selection.of(where=HOT, limit=2)
    assert [r.sequence for r in limited.take(StreamKind.DYNAMODB, records[:2])] == [1]
    assert [r.sequence for r in limited.take(StreamKind.DYNAMODB, records[2:])] == [3]  # one left in the run
    assert limited.take(StreamKind.DYNAMODB, records) == []
    assert not Selection().narrows_records and Selection.of(limit=0).narrows_records


def test_where_reads_a_file_and_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(HOT)
    assert read_pattern(f"@{tmp_path / 'p.json'}").text == HOT
    with pytest.raises(ConfigError, match="cannot read"):
        read_pattern(f"@{tmp_path / 'missing.json'}")
    with pytest.raises(ConfigError, match="empty lists"):
        read_pattern('{"a": []}')
    assert parse_moment("0", "--since") == datetime(1970, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--until"):
        parse_moment("yesterday", "--until")


def put(table: DynamoTable, payloads: list[str]) -> list[dict[str, Any]]:
    for i, payload in enumerate(payloads):
        table.put(1, start=i, payload=payload)
    return table.stream_records()


def fetch_args(table: DynamoTable, stream: list[dict[str, Any]]) -> list[str]:
    first, last = stream[0]["dynamodb"]["SequenceNumber"], stream[-1]["dynamodb"]["SequenceNumber"]
    return [
        "fetch",
        "--stream-arn",
        table.stream_arn,
        "--shard-id",
        table.shard_id,
        "--start",
        first,
        "--end",
        last,
    ]


def payloads(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["NewImage"]["pk"]["S"] for r in records]


def test_fetch_where_sends_only_matching_records(table: DynamoTable, repair: RepairFunction) -> None:
    stream = put(table, ["hot", "cold", "hot", "cold", "hot"])
    result = run(
        *fetch_args(table, stream), "--where", HOT, "--to", f"lambda:{repair.name}", "--no-preflight"
    )
    assert result.exit_code == 0, result.output
    assert payloads(repair.received()) == ["item-0", "item-2", "item-4"]


def test_limit_and_a_window_in_the_future(table: DynamoTable, repair: RepairFunction) -> None:
    stream = put(table, ["hot", "cold", "hot"])
    args = [*fetch_args(table, stream), "--to", f"lambda:{repair.name}", "--no-preflight"]
    assert run(*args, "--limit", "2").exit_code == 0
    assert payloads(repair.received()) == ["item-0", "item-1"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert run(*args, "--since", later).exit_code == 0
    assert len(repair.received()) == 2  # nothing arrived after then: nothing more sent
    earlier = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()
    assert run(*args, "--since", earlier, "--where", HOT).exit_code == 0
    assert payloads(repair.received()) == ["item-0", "item-1", "item-0", "item-2"]


def test_dry_run_shows_counts_and_the_records(table: DynamoTable, tmp_path: Path) -> None:
    stream = put(table, ["hot", "cold", "hot", "cold"])
    record = table.invocation_record(0, 3, stream)
    result = run(
        "replay",
        "--dry-run",
        "--show",
        "--json",
        "--where",
        HOT,
        "--to",
        "lambda:nobody",
        "--no-preflight",  # a dry run checks the function is there, as the run does: this one is not
        input=json.dumps(record),
    )
    assert result.exit_code == 0, result.output
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert payloads(shown) == ["item-0", "item-2"]
    first, third = stream[0]["dynamodb"]["SequenceNumber"], stream[2]["dynamodb"]["SequenceNumber"]
    report = json.loads(result.stderr[result.stderr.index("{\n") :])  # after any log lines
    (planned,) = report["ranges"]
    assert "4 records" in planned["reason"] and f"send 2 of 4 ({first}..{third})" in planned["reason"]


def test_shard_selects_ranges(table: DynamoTable, repair: RepairFunction) -> None:
    stream = put(table, ["hot"])
    args = ["replay", "--to", f"lambda:{repair.name}", "--no-preflight"]
    record = json.dumps(table.invocation_record(0, 0, stream))
    result = run(*args, "--shard", "shardId-of-another", input=record)
    assert result.exit_code == 0 and repair.received() == []
    assert run(*args, "--shard", table.shard_id, input=record).exit_code == 0 and len(repair.received()) == 1


def test_a_selection_is_refused_with_archive_sinks(table: DynamoTable, tmp_path: Path) -> None:
    stream = put(table, ["hot"])
    result = run(*fetch_args(table, stream), "--where", HOT, "--to", f"file:{tmp_path}")
    assert result.exit_code == 2 and "keeps whole ranges" in result.output
    assert not list(tmp_path.iterdir())


def test_redrive_where_sends_part_and_leaves_no_marker(
    table: DynamoTable, repair: RepairFunction, tmp_path: Path
) -> None:
    stream = put(table, ["hot", "cold", "hot", "cold"])
    root = tmp_path / "archive"
    (failure,) = parse_message(table.invocation_record(0, 3, stream))

    async def archive() -> None:
        async with Clients() as clients:
            outcome = await Replayer(clients, [FileSink(root)], allow=AllowList.of(["*"])).replay(failure)
        assert outcome.kind.value == "replayed"

    asyncio.run(archive())
    base = ("redrive", "--from", f"file:{root}", "--to", f"lambda:{repair.name}", "--json", "--no-preflight")
    planned = run(*base, "--dry-run", "--where", HOT)
    assert planned.exit_code == 0, planned.output
    (plan,) = json.loads(planned.stdout)["ranges"]
    assert "would send 2 of 4" in plan["reason"]
    assert run(*base, "--where", HOT).exit_code == 0
    assert payloads(repair.received()) == ["item-0", "item-2"]
    assert not list(root.rglob("redriven"))  # part of the range: a later full re-drive still sends it
    assert run(*base).exit_code == 0
    assert payloads(repair.received()) == ["item-0", "item-2", "item-0", "item-1", "item-2", "item-3"]
    assert len(list(root.rglob("redriven/*.json"))) == 1
