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


def test_a_stream_that_does_not_exist_rejects_its_own_ranges_only_and_writes_no_loss_report(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    table.put(6)
    records = table.stream_records()
    gone = table.stream_arn.replace(table.name, "gone-table")
    ranges = [table.invocation_record(0, 1, records), table.invocation_record(2, 3, records)]
    for r in ranges:
        r["DDBStreamBatchInfo"]["streamArn"] = gone
    good = table.invocation_record(4, 5, records)
    proxy.clear()
    result = run("replay", "--to", f"file:{tmp_path}", "--json", input=json.dumps([*ranges, good]))
    assert result.exit_code == 1, result.output  # something was rejected: not a set-up error (2)
    assert not errors(result)
    described = json.loads(result.stdout)["ranges"]
    outcomes = sorted((r["range"]["stream_arn"], r["outcome"], r["recovered"]) for r in described)
    assert outcomes == sorted(
        [(gone, "rejected", 0), (gone, "rejected", 0), (table.stream_arn, "replayed", 2)]
    )
    assert {r["reason"] for r in described if r["outcome"] == "rejected"} == {f"no such stream: {gone}"}
    folders = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert folders and not [p for p in folders if "gone-table" in str(p)]  # no loss report for the gone


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


def _setup_mistake(kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Make one AWS set-up mistake a new user makes; the text its one line must name."""
    config = tmp_path / "aws-config"
    if kind == "profile":
        config.write_text("[profile real]\nregion = us-east-1\n")
        monkeypatch.setenv("AWS_PROFILE", "reall")  # mistyped
        expected = "The config profile (reall) could not be found"
    elif kind == "config-file":
        config.write_text("[default\nregion = us-east-1\n")  # a broken section header
        expected = "Unable to parse config file"
    else:
        script = tmp_path / "creds.sh"
        script.write_text("#!/bin/sh\necho 'token expired: run sso login' >&2\nexit 1\n")
        script.chmod(0o755)
        config.write_text(f"[profile ci]\ncredential_process = {script}\n")
        monkeypatch.setenv("AWS_PROFILE", "ci")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)
        expected = "token expired: run sso login"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return expected


@pytest.mark.parametrize("kind", ["profile", "config-file", "credential-process"])
@pytest.mark.parametrize("command", ["replay", "fetch", "redrive", "drain", "run", "status"])
def test_a_broken_aws_set_up_is_one_line_and_exit_2_for_every_command(
    command: str, kind: str, table: DynamoTable, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    table.put(1)
    record = json.dumps(table.invocation_record(0, 0))
    info = table.invocation_record(0, 0)["DDBStreamBatchInfo"]
    queue = make_queue(moto_endpoint)
    (tmp_path / "archive").mkdir()
    args = {
        "replay": ["replay", "--to", "-"],
        "fetch": ["fetch", "--to", "-", "--stream-arn", table.stream_arn, "--shard-id", info["shardId"],
                  "--start", info["startSequenceNumber"], "--end", info["endSequenceNumber"]],
        "redrive": ["redrive", "--from", f"file:{tmp_path / 'archive'}", "--to", "lambda:repair"],
        "drain": ["drain", "--queue", queue, "--to", f"file:{tmp_path / 'out'}"],
        "run": ["run", "--queue", queue, "--to", f"file:{tmp_path / 'out'}", "--http-port", "off"],
        "status": ["status", "--queue", queue],
    }[command]  # fmt: skip
    expected = _setup_mistake(kind, monkeypatch, tmp_path)
    result = run(*args, input=record)
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert expected in line and "AWS configuration: " in line
    assert "Traceback" not in result.output and len(result.stderr.splitlines()) <= 2


def test_a_dry_run_runs_the_preflight_a_missing_bucket_is_exit_2(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    table.put(2)
    proxy.clear()
    result = run(
        "replay",
        "--dry-run",
        "--to",
        "s3://no-such-bucket-here",
        input=json.dumps(table.invocation_record(0, 1)),
    )
    assert result.exit_code == 2, result.output  # as the real run: a dry run promises what the run does
    (line,) = errors(result)
    assert "s3://no-such-bucket-here: no such bucket" in line
    assert proxy.count("GetRecords") == 0


def test_a_redrive_dry_run_checks_the_function_too(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    result = run(
        "redrive", "--dry-run", "--from", f"file:{tmp_path / 'archive'}", "--to", "lambda:no-such-repair"
    )
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "lambda:no-such-repair: no such function" in line


def test_replay_with_no_stream_allowed_stops_naming_the_streams_and_the_flags_to_add(
    table: DynamoTable, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    table.put(2)
    monkeypatch.delenv("REPLAYER_ALLOW_STREAMS")
    records = [table.invocation_record(0, 0), table.invocation_record(1, 1)]
    records[1]["DDBStreamBatchInfo"]["streamArn"] = other = table.stream_arn.replace(table.name, "other")
    proxy.clear()
    for extra in ([], ["--dry-run"], ["--no-preflight"]):
        result = run("replay", "--to", f"file:{tmp_path}", *extra, input=json.dumps(records))
        assert result.exit_code == 2, result.output
        (line,) = errors(result)
        assert f"add: --allow-stream {table.stream_arn} --allow-stream {other}" in line
        assert "REPLAYER_ALLOW_STREAMS" in line and "2 streams" in line
    assert not proxy.seen and not list(tmp_path.iterdir())  # nothing asked, read or written
    info = records[0]["DDBStreamBatchInfo"]
    fetch = run(
        "fetch", "--to", "-", "--stream-arn", table.stream_arn, "--shard-id", info["shardId"],
        "--start", info["startSequenceNumber"], "--end", info["endSequenceNumber"],
    )  # fmt: skip
    assert fetch.exit_code == 2 and f"add: --allow-stream {table.stream_arn}" in errors(fetch)[0]
