"""`replayer replay` and `replayer fetch` end to end: CLI -> moto over HTTP -> archive."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.cli import app
from replayer.parse import parse_message
from replayer.sinks._layout import range_path
from tests.support.aws import DynamoTable, client
from tests.support.events import load_event
from tests.support.faultproxy import FaultProxy

runner = CliRunner()


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def archived(root: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    (failure,) = parse_message(record)
    path = root.joinpath(*range_path(failure).split("/"), "records.jsonl.gz")
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def test_replay_a_file_into_s3_and_compare_record_by_record(
    table: DynamoTable, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    table.put(8)
    stream = table.stream_records()
    record = table.invocation_record(2, 6)
    path = tmp_path / "failure.json"
    path.write_text(json.dumps(record))
    result = run("replay", str(path), "--to", f"s3://{bucket}/rescued", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["totals"]["replayed"] == 1 and summary["totals"]["records_recovered"] == 5
    (failure,) = parse_message(record)
    key = f"rescued/{range_path(failure)}/records.jsonl.gz"
    body = client("s3", moto_endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    lines = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert seqs(lines) == seqs(stream[2:7])
    assert [line["dynamodb"]["Keys"] for line in lines] == [r["dynamodb"]["Keys"] for r in stream[2:7]]


def test_replay_reads_arrays_json_lines_and_stdin(table: DynamoTable, tmp_path: Path) -> None:
    table.put(9)
    records = table.stream_records()
    ranges = [table.invocation_record(0, 2, records), table.invocation_record(3, 5, records)]
    (tmp_path / "array.json").write_text(json.dumps(ranges))
    (tmp_path / "lines.jsonl").write_text(json.dumps(table.invocation_record(6, 8, records)) + "\n\n")
    sqs_body = json.dumps(ranges[0])  # the same range again, as an SQS body on stdin: worked on once
    out = tmp_path / "archive"
    result = run(
        "replay", str(tmp_path / "array.json"), str(tmp_path / "lines.jsonl"), "-", "--to", f"file:{out}", "--json",
        input=sqs_body,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["ranges"] == 3  # the range named twice: reported once
    for i, r in enumerate([*ranges, table.invocation_record(6, 8, records)]):
        assert seqs(archived(out, r)) == seqs(records[3 * i : 3 * i + 3])


def test_stdout_sink_prints_the_records(table: DynamoTable) -> None:
    table.put(3)
    stream = table.stream_records()
    result = run("replay", "--to", "-", input=json.dumps(table.invocation_record(0, 2, stream)))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert seqs(lines) == seqs(stream) and all(line["eventSourceARN"] == table.stream_arn for line in lines)


def test_malformed_input_is_a_clear_error_and_exit_1(table: DynamoTable, tmp_path: Path) -> None:
    table.put(2)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(table.invocation_record(0, 1)))
    bad = tmp_path / "bad.json"
    broken = table.invocation_record(0, 1)
    broken["DDBStreamBatchInfo"]["startSequenceNumber"] = "12x"
    bad.write_text(json.dumps(broken))
    result = run("replay", str(good), str(bad), "--to", f"file:{tmp_path / 'a'}", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["totals"] == {**summary["totals"], "replayed": 1, "rejected": 1}
    reasons = [r["reason"] for r in summary["ranges"] if r["outcome"] == "rejected"]
    assert any("startSequenceNumber" in r and "bad.json" in r for r in reasons)
    assert "Traceback" not in result.output


def test_not_allowed_streams_are_rejected_and_never_read(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    table.put(2)
    record = json.dumps(table.invocation_record(0, 1))
    proxy.clear()
    result = run(
        "replay",
        "--to",
        f"file:{tmp_path}",
        "--allow-stream",
        "arn:aws:dynamodb:*:*:table/other/*",
        input=record,
    )
    assert result.exit_code == 1
    assert "not in --allow-stream" in result.output
    assert proxy.count("GetShardIterator") == 0 and proxy.count("GetRecords") == 0
    assert not list(tmp_path.iterdir())


def test_allow_list_from_the_environment(
    table: DynamoTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    monkeypatch.setenv(
        "REPLAYER_ALLOW_STREAMS", f"arn:aws:dynamodb:*:*:table/nothing/*, *table/{table.name}/stream/*"
    )
    result = run("replay", "--to", f"file:{tmp_path}", input=json.dumps(table.invocation_record(0, 1)))
    assert result.exit_code == 0, result.output


def test_dry_run_reads_and_writes_nothing(table: DynamoTable, proxy: FaultProxy, tmp_path: Path) -> None:
    table.put(2)
    proxy.clear()
    result = run(
        "replay",
        "--dry-run",
        "--json",
        "--to",
        f"file:{tmp_path}",
        input=json.dumps(table.invocation_record(0, 1)),
    )
    assert result.exit_code == 0, result.output
    (planned,) = json.loads(result.stdout)["ranges"]
    assert planned["outcome"] == "planned" and planned["reason"].startswith(f"would read {table.stream_arn}")
    assert "2 records" in planned["reason"] and "mapping unknown" in planned["reason"]
    # it reads the range and asks which mapping it came from; it writes and invokes nothing
    writes = [s for s in proxy.seen if s.startswith(("PUT", "POST /2015-03-31/functions"))]
    assert "GetRecords" in proxy.seen and writes == [] and not list(tmp_path.iterdir())


def test_fetch_a_manual_range(table: DynamoTable, tmp_path: Path) -> None:
    table.put(6)
    stream = table.stream_records()
    start, end = stream[1]["dynamodb"]["SequenceNumber"], stream[4]["dynamodb"]["SequenceNumber"]
    result = run(
        "fetch", "--stream-arn", table.stream_arn, "--shard-id", table.shard_id, "--start", start, "--end", end,
        "--to", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seqs([json.loads(line) for line in result.stdout.splitlines()]) == seqs(stream[1:5])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--to", "ftp://x"], "unknown sink"),
        (["replay"], "--to (or REPLAYER_TO) is required"),
        (["fetch", "--stream-arn", "arn:aws:s3:::bucket", "--shard-id", "shardId-1", "--start", "1", "--end", "2", "--to", "-"], "streamArn"),
        (["fetch", "--stream-arn", "x", "--shard-id", "s", "--start", "1", "--to", "-"], "--end is required"),
        (["replay", "--concurrency", "0", "--to", "-"], "concurrency"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run(*args, input="")
    assert result.exit_code == 2
    assert message in result.output


def test_sample_events_replay_in_dry_run() -> None:
    for name in ("ddb_esm_sqs_record.json", "sns_notification_ddb.json", "pipes_ddb_dlq.json"):
        result = run("replay", "--dry-run", "--json", input=json.dumps(load_event(name)))
        assert result.exit_code == 0, (name, result.output)


def test_console_script_and_module_entry_points(tmp_path: Path) -> None:
    for cmd in (
        [sys.executable, "-m", "replayer", "--version"],
        [str(Path(sys.executable).parent / "replayer"), "--version"],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
        assert out.stdout.startswith("replayer ")


def test_each_command_loads_only_its_own_module() -> None:
    """`replayer CMD` imports CMD's module alone (start-up is paid on every run); every command is mapped."""
    import typer.main

    from replayer import cli

    registered = set(typer.main.get_command(cli.load()).commands)  # type: ignore[attr-defined]
    assert registered == set(cli.COMMANDS)
    code = (
        "import sys; from replayer import cli; cli.load('replay'); "
        "print(sorted(m for m in sys.modules if m.startswith('replayer.cli.') or m.split('.')[0] in "
        "('aioboto3', 'aiobotocore', 'boto3')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(eval(out))
    assert "replayer.cli.replay" in loaded
    others = {f"replayer.cli.{m}" for m in cli.COMMANDS.values()} - {"replayer.cli.replay"}
    assert not loaded & (others | {"aioboto3", "aiobotocore", "boto3"}), loaded
