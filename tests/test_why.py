"""`replayer why RANGE_ID`: the archived invocation record's request id joined with the function's
CloudWatch Logs (log events written by the test, as the Python runtime writes them)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.archive.store import FileStore
from replayer.archive.write import write_range
from replayer.aws import Clients
from replayer.cli import app
from replayer.core import Replayer
from replayer.model import AT_RISK, Failure, StreamKind, StreamRecord
from replayer.parse import parse_message
from replayer.sinks import FileSink
from tests.support.aws import DynamoTable, unique
from tests.support.faultproxy import FaultProxy, Rule, service_error
from tests.support.watch import log_lines

runner = CliRunner()
REQUEST = "316aa6d0-8154-4e5b-9af7-85d5f4a6bc81"
OTHER = "aaaaaaaa-8154-4e5b-9af7-85d5f4a6bc81"


def failed_range(table: DynamoTable, root: Path, name: str, at: datetime) -> str:
    """A range that failed in function `name` (request REQUEST, at `at`), archived; its range id."""
    table.put(3)
    record = table.invocation_record(0, 2)
    record["requestContext"] |= {
        "requestId": REQUEST,
        "functionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
    }
    record["timestamp"] = at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    (failure,) = parse_message(record)

    async def go() -> None:
        async with Clients() as clients:
            await Replayer(clients, [FileSink(root)], allow=AllowList.of(["*"]), find_mappings=False).replay(
                failure
            )

    asyncio.run(go())
    return failure.range_id


def invocation_logs(endpoint: str, name: str, at: datetime) -> None:
    """The log stream of the failing invocation, and another request's line in another stream."""
    t = at - timedelta(seconds=5)
    stream = "2026/01/01/[$LATEST]0123456789abcdef"
    log_lines(endpoint, f"/aws/lambda/{name}", stream, [
        (t, f"START RequestId: {REQUEST} Version: 7"),
        (t + timedelta(milliseconds=10), "processing 3 records"),  # print(): no request id
        (t + timedelta(milliseconds=20), json.dumps({"errorMessage": "order 42 has no price", "errorType": "KeyError",
                                                      "requestId": REQUEST, "stackTrace": ["  File handler.py"]})),
        (t + timedelta(milliseconds=30), f"END RequestId: {REQUEST}"),
        (t + timedelta(milliseconds=31), f"REPORT RequestId: {REQUEST}\tDuration: 30.00 ms"),
    ])  # fmt: skip
    log_lines(endpoint, f"/aws/lambda/{name}", "2026/01/01/[$LATEST]other", [
        (t, f"START RequestId: {OTHER} Version: 7"),
        (t + timedelta(milliseconds=5), f"[ERROR]\t{OTHER}\tsomething else entirely"),
    ])  # fmt: skip


def why(*args: str) -> Any:
    return runner.invoke(app, ["why", *args], catch_exceptions=False)


def test_why_shows_the_failing_invocations_lines_and_version(
    table: DynamoTable, moto_endpoint: str, tmp_path: Path
) -> None:
    name, at = unique("consumer"), datetime.now(UTC).replace(microsecond=0)
    range_id = failed_range(table, tmp_path, name, at)
    invocation_logs(moto_endpoint, name, at)

    result = why(range_id, "--from", f"file:{tmp_path}")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert f"version 7), request {REQUEST}" in text
    assert "order 42 has no price" in text and "processing 3 records" in text
    assert "something else entirely" not in text

    short = why(range_id[:12], "--from", f"file:{tmp_path}", "--json")
    document = json.loads(short.stdout)
    assert document["range_id"] == range_id and document["version"] == "7"
    messages = [line["message"] for line in document["lines"]]
    assert messages[0].startswith("START") and messages[-1].startswith("REPORT") and len(messages) == 5


def test_no_permission_to_read_the_logs_is_one_line(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    name, at = unique("consumer"), datetime.now(UTC)
    range_id = failed_range(table, tmp_path, name, at)
    proxy.add(
        Rule(
            lambda r: r.operation == "FilterLogEvents",
            reply=service_error("logs", 400, "AccessDeniedException"),
        )
    )
    result = why(range_id, "--from", f"file:{tmp_path}")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: not permitted to read /aws/lambda/{name}: logs:FilterLogEvents is needed (AccessDeniedException)"
    ]


def test_an_unknown_range_is_one_line(tmp_path: Path, moto_endpoint: str) -> None:
    result = why("0123456789abcdef", "--from", f"file:{tmp_path}")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no range 0123456789abcdef" in result.stderr


def test_lines_without_the_request_id_are_shown_as_the_groups(
    table: DynamoTable, moto_endpoint: str, tmp_path: Path
) -> None:
    name, at = unique("consumer"), datetime.now(UTC).replace(microsecond=0)
    range_id = failed_range(table, tmp_path, name, at)
    log_lines(moto_endpoint, f"/aws/lambda/{name}", "s", [(at - timedelta(seconds=2), "Traceback: boom")])
    result = why(range_id, "--from", f"file:{tmp_path}")
    assert result.exit_code == 0 and "Traceback: boom" in result.stdout
    assert f"names request {REQUEST}: shown are its lines around the failure" in " ".join(
        result.stdout.split()
    )
    empty = why(failed_range(DynamoTable(moto_endpoint), tmp_path / "other", unique("gone"), at), "--from",
                f"file:{tmp_path / 'other'}")  # fmt: skip
    assert empty.exit_code == 2 and "not found" in empty.stderr  # no such log group: one line


def test_an_at_risk_window_has_no_failed_invocation_to_show(tmp_path: Path, moto_endpoint: str) -> None:
    stream = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"
    window = Failure(StreamKind.DYNAMODB, stream, "shardId-1", "100", "100", condition=AT_RISK)
    record = StreamRecord("100", json.dumps({"dynamodb": {"SequenceNumber": "100"}}).encode())
    asyncio.run(write_range(FileStore(tmp_path), window, [[record]], ()))
    result = why(window.range_id, "--from", f"file:{tmp_path}", "--json")
    assert result.exit_code == 1 and "archived by the at-risk watch" in json.loads(result.stdout)["note"]
