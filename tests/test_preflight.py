"""Pre-flight: set-up mistakes end in one line each and exit 2 before any work (through the real CLI)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.cli import app
from tests.support.aws import DynamoTable, client, make_queue, unique
from tests.support.faultproxy import FaultProxy

runner = CliRunner()


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def errors(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_missing_bucket_is_one_line_and_exit_2_before_any_read(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    table.put(2)
    proxy.clear()
    result = run(
        "replay", "--to", "s3://no-such-bucket-here", input=json.dumps(table.invocation_record(0, 1))
    )
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert "s3://no-such-bucket-here: no such bucket; create it" in line
    assert proxy.count("GetShardIterator") == 0 and proxy.count("GetRecords") == 0
    assert proxy.count("HEAD /no-such-bucket-here") == 1


def test_file_sink_on_a_regular_file(table: DynamoTable, tmp_path: Path) -> None:
    table.put(1)
    regular = tmp_path / "not-a-dir"
    regular.write_text("x")
    result = run("replay", "--to", f"file:{regular}", input=json.dumps(table.invocation_record(0, 0)))
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "is a regular file; file: needs a directory" in line


def test_a_function_that_does_not_exist(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(1)
    proxy.clear()
    result = run("replay", "--to", "lambda:no-such-repair", input=json.dumps(table.invocation_record(0, 0)))
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "lambda:no-such-repair: no such function" in line and "deploy it" in line
    assert not [op for op in proxy.seen if "invocations" in op] and proxy.count("GetRecords") == 0


def test_a_stream_that_does_not_exist_is_no_such_stream_asked_once_and_no_loss_report(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    table.put(4)
    records = table.stream_records()
    gone = table.stream_arn.replace(table.name, "gone-table")
    ranges = [table.invocation_record(0, 1, records), table.invocation_record(2, 3, records)]
    for r in ranges:
        r["DDBStreamBatchInfo"]["streamArn"] = gone
    proxy.clear()
    result = run("replay", "--to", f"file:{tmp_path}", input=json.dumps(ranges))
    assert result.exit_code == 2
    (line,) = errors(result)
    assert f"{gone}: no such stream" in line and "expired" not in result.output
    assert proxy.count("DescribeStream") == 1  # once per stream, not per range
    assert proxy.count("GetShardIterator") == 0
    assert not list(tmp_path.iterdir())  # no loss report: nothing existed to be lost


def test_without_preflight_a_stream_that_does_not_exist_is_rejected_not_lost(
    table: DynamoTable, tmp_path: Path
) -> None:
    table.put(2)
    record = table.invocation_record(0, 1)
    record["DDBStreamBatchInfo"]["streamArn"] = gone = table.stream_arn.replace(table.name, "gone-table")
    result = run("replay", "--to", f"file:{tmp_path}", "--no-preflight", "--json", input=json.dumps(record))
    assert result.exit_code == 1
    (outcome,) = json.loads(result.stdout)["ranges"]
    assert (outcome["outcome"], outcome["reason"]) == ("rejected", f"no such stream: {gone}")
    assert "records_lost" not in result.stderr
    assert not list(tmp_path.iterdir())  # no loss report: nothing existed to be lost
    planned = run("replay", "--dry-run", "--json", input=json.dumps(record))  # a dry run says the same
    (outcome,) = json.loads(planned.stdout)["ranges"]
    assert outcome["outcome"] == "planned" and outcome["reason"].endswith(
        f"would be rejected: no such stream: {gone}"
    )


def test_a_queue_that_does_not_exist(moto_endpoint: str, bucket: str) -> None:
    queue = make_queue(moto_endpoint).rsplit("/", 1)[0] + "/" + unique("missing")
    result = run("drain", "--queue", queue, "--to", f"s3://{bucket}")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "no such queue; create it or fix the URL" in line


def test_every_problem_at_once_one_line_each(moto_endpoint: str, tmp_path: Path) -> None:
    queue = make_queue(moto_endpoint).rsplit("/", 1)[0] + "/" + unique("missing")
    regular = tmp_path / "f"
    regular.write_text("")
    result = run("drain", "--queue", queue, "--to", "s3://no-such-bucket-here", "--to", f"file:{regular}")
    assert result.exit_code == 2
    assert len(errors(result)) == 3
    assert "nothing was read or written (--no-preflight skips these checks)" in result.stderr


def test_an_unreachable_endpoint_says_aws_endpoint_url(
    table: DynamoTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(1)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    result = run("replay", "--to", "-", input=json.dumps(table.invocation_record(0, 0)))
    assert result.exit_code == 2
    (line,) = errors(result)
    assert f"cannot reach the AWS endpoint http://127.0.0.1:{port} (AWS_ENDPOINT_URL)" in line
    assert "unset it to use AWS" in line


def test_no_credentials(table: DynamoTable, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    table.put(1)
    record = json.dumps(table.invocation_record(0, 0))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run("replay", "--to", "-", input=record)
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "no AWS credentials found" in line and "AWS_PROFILE" in line


def test_no_preflight_skips_the_checks(table: DynamoTable, proxy: FaultProxy, tmp_path: Path) -> None:
    table.put(2)
    proxy.clear()
    result = run(
        "replay",
        "--no-preflight",
        "--to",
        f"file:{tmp_path}",
        input=json.dumps(table.invocation_record(0, 1)),
    )
    assert result.exit_code == 0, result.output
    assert proxy.count("DescribeStream") == 0 and proxy.count("GetRecords") >= 1


def test_a_good_set_up_passes_and_works(table: DynamoTable, bucket: str, moto_endpoint: str) -> None:
    table.put(2)
    result = run(
        "replay", "--to", f"s3://{bucket}/x", "--json", input=json.dumps(table.invocation_record(0, 1))
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["replayed"] == 1
    assert client("s3", moto_endpoint).list_objects_v2(Bucket=bucket)["KeyCount"] >= 1


def test_redrive_checks_its_archive_and_functions(tmp_path: Path) -> None:
    result = run("redrive", "--from", f"file:{tmp_path / 'nothing-here'}", "--to", "lambda:no-such-repair")
    assert result.exit_code == 2
    lines = errors(result)
    assert any("no such directory" in line for line in lines)
    assert any("lambda:no-such-repair: no such function" in line for line in lines)
