"""`replayer drain`: the service loop in burst mode, through the CLI, against moto over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from replayer.cli import app
from replayer.config import load, queue_region
from tests.support import ROOT
from tests.support.aws import DynamoTable, client, keys, make_queue, queue_counts, send
from tests.support.faultproxy import FaultProxy, Request, Rule

runner = CliRunner()


def drain(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["drain", "--wait-seconds", "1", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_drain_empties_the_queue_and_summarises(table: DynamoTable, bucket: str, moto_endpoint: str) -> None:
    table.put(4)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 1, records), table.invocation_record(2, 3, records))
    code, out, err = drain("--queue", queue, "--to", f"s3://{bucket}", "--allow-stream", table.stream_arn)
    assert code == 0, err
    assert "messages: 2 received, 2 deleted, 0 retried, 0 quarantined, 0 left, 0 released" in out
    assert "2 replayed" in out
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    assert len([k for k in keys(moto_endpoint, bucket) if k.endswith("records.jsonl.gz")]) == 2


def test_after_traffic_an_empty_short_poll_and_an_empty_count_end_the_drain(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    """No long poll after the work: its whole wait would be paid once everything is done."""
    table.put(2)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 1, records))
    proxy.clear()
    waits: list[int] = []

    def note_wait(request: Request) -> bool:  # watches, never takes the request
        if request.operation == "ReceiveMessage":
            waits.append(int(request.json().get("WaitTimeSeconds", 0)))
        return False

    proxy.add(Rule(note_wait))
    code, _, err = drain(
        "--queue", queue, "--to", f"s3://{bucket}", "--allow-stream", table.stream_arn, "--wait-seconds", "5"
    )
    assert code == 0, err
    assert waits == [5, 0]  # a long poll finds the message; a short poll finds the queue empty
    assert proxy.count("GetQueueAttributes") >= 1  # SQS's count confirmed it
    assert queue_counts(moto_endpoint, queue) == (0, 0)


def test_drain_json_and_exit_code_when_something_was_rejected(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    other = DynamoTable(moto_endpoint)
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(
        moto_endpoint,
        queue,
        table.invocation_record(0, 0),
        other.invocation_record(0, 0, records=[{"dynamodb": {"SequenceNumber": "9" * 21}}]),
        "[]",
    )
    code, out, err = drain(
        "--queue",
        queue,
        "--to",
        f"s3://{bucket}/a",
        "--allow-stream",
        table.stream_arn,
        "--quarantine",
        f"s3://{bucket}/q",
        "--json",
    )
    assert code == 1, err
    document = json.loads(out)
    assert document["messages"] == {
        "received": 3,
        "deleted": 3,
        "retried": 0,
        "quarantined": 2,
        "left": 0,
        "released": 0,
    }
    assert document["totals"]["replayed"] == 1 and document["totals"]["rejected"] == 2  # forged; not a record
    assert document["exit_code"] == 1
    assert len(keys(moto_endpoint, bucket, "q/")) == 2
    assert queue_counts(moto_endpoint, queue) == (0, 0)


def test_a_stream_that_does_not_exist_is_rejected_and_quarantined_not_lost(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    """Allowed by a glob (so no pre-flight names it): read, found missing, `no such stream`."""
    table.put(2)
    gone = table.invocation_record(0, 1)
    gone["DDBStreamBatchInfo"]["streamArn"] = gone_arn = table.stream_arn.replace(table.name, "gone-table")
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, gone)
    code, out, err = drain(
        "--queue", queue, "--to", f"s3://{bucket}/a", "--allow-stream", "*", "--quarantine", f"s3://{bucket}/q",
        "--json",
    )  # fmt: skip
    assert code == 1, err
    document = json.loads(out)
    (outcome,) = document["ranges"]
    assert (outcome["outcome"], outcome["reason"]) == ("rejected", f"no such stream: {gone_arn}")
    assert document["messages"]["quarantined"] == 1 and document["messages"]["retried"] == 0
    assert keys(moto_endpoint, bucket, "a/") == []  # no loss report: nothing existed to be lost
    assert len(keys(moto_endpoint, bucket, "q/")) == 1
    assert "records_lost" not in err
    assert queue_counts(moto_endpoint, queue) == (0, 0)


def test_every_configuration_problem_is_reported_at_once(moto_endpoint: str) -> None:
    code, _, err = drain(
        "--to",
        "ftp://nowhere",
        "--quarantine",
        "s3://",
        env={"REPLAYER_CONCURRENCY": "0", "REPLAYER_GRACE_SECONDS": "soon"},
    )
    assert code == 2
    text = " ".join(err.split())  # rich may wrap long lines
    assert "5 configuration problems" in text
    for expected in (
        "--queue (or REPLAYER_QUEUE) is required",
        "--to: 'ftp://nowhere'",
        "--quarantine: 's3://'",
        "REPLAYER_CONCURRENCY: 0 is out of range",
        "REPLAYER_GRACE_SECONDS: 'soon' is not a number",
    ):
        assert expected in text


def test_flags_override_the_environment(table: DynamoTable, bucket: str, moto_endpoint: str) -> None:
    queue = make_queue(moto_endpoint)
    code, _, err = drain(
        "--queue", queue, env={"REPLAYER_QUEUE": "not a url", "REPLAYER_TO": f"s3://{bucket}"}
    )
    assert code == 0, err


def test_a_queue_that_is_not_there_is_a_clear_error(bucket: str, moto_endpoint: str) -> None:
    code, _, err = drain("--queue", f"{moto_endpoint}/123456789012/no-such-queue", "--to", f"s3://{bucket}")
    assert code == 2
    assert "no-such-queue" in err and "Traceback" not in err


def test_no_durable_sink_is_warned_about(moto_endpoint: str, capfd: pytest.CaptureFixture[str]) -> None:
    queue = make_queue(moto_endpoint)
    code, _, err = drain("--queue", queue, "--to", "-", "--log-level", "warning")
    assert code == 0
    assert "no --to sink keeps loss reports" in err + capfd.readouterr().err


def test_drain_as_a_process_configured_from_the_environment(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(3)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 2))
    env = {
        **os.environ,
        "REPLAYER_QUEUE": queue,
        "REPLAYER_TO": f"s3://{bucket}/x",
        "REPLAYER_WAIT_SECONDS": "1",
        "REPLAYER_ALLOW_STREAMS": f"{table.stream_arn}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "replayer", "drain", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["records_recovered"] == 3
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    assert client("s3", moto_endpoint).list_objects_v2(Bucket=bucket, Prefix="x/")["KeyCount"] == 2


def test_settings_from_the_environment_and_flags() -> None:
    env = {
        "REPLAYER_QUEUE": "https://sqs.eu-west-1.amazonaws.com/123456789012/failures",
        "REPLAYER_TO": "s3://archive/p, lambda:repair",
        "REPLAYER_ALLOW_STREAMS": "arn:aws:dynamodb:*:*:table/a/stream/*,arn:aws:kinesis:*:*:stream/b",
        "REPLAYER_INVOKE_RETRIES": "5",
        "REPLAYER_HTTP_PORT": "off",
        "REPLAYER_CONCURRENCY": "4",
    }
    settings = load("run", {"concurrency": 2}, env)
    assert settings.to == ("s3://archive/p", "lambda:repair")
    assert len(settings.allow_streams) == 2
    assert settings.invoke_retries == 5 and settings.http_port is None
    assert settings.concurrency == 2  # the flag wins over REPLAYER_CONCURRENCY
    assert settings.heartbeat_seconds == settings.visibility_timeout / 3
    assert queue_region(env["REPLAYER_QUEUE"]) == "eu-west-1"


@pytest.mark.parametrize("command", ["drain", "run"])
def test_no_stream_allowed_refuses_to_start_and_leaves_the_queue_alone(
    command: str, table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 0))
    monkeypatch.delenv("REPLAYER_ALLOW_STREAMS")
    result = runner.invoke(app, [command, "--queue", queue, "--to", f"s3://{bucket}", "--http-port", "off"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()  # one line, naming the option and its variable
    assert line.startswith("error: --allow-stream (or REPLAYER_ALLOW_STREAMS) is required")
    assert queue_counts(moto_endpoint, queue) == (1, 0)  # nothing received, nothing quarantined


def test_a_queue_name_instead_of_a_url_is_one_line_saying_how_to_get_the_url(bucket: str) -> None:
    code, _, err = drain("--queue", "replayer-failures", "--to", f"s3://{bucket}")
    assert code == 2
    (line,) = err.splitlines()
    assert "'replayer-failures' is not an SQS queue URL" in line
    assert "aws sqs get-queue-url --queue-name replayer-failures" in line


def test_the_quarantine_drains_back_once_its_stream_is_allowed(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    """docs/quarantine.md: an SQS quarantine holds the original bodies; draining it replays them."""
    table.put(4)
    records = table.stream_records()
    queue, quarantine = make_queue(moto_endpoint), make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 1, records), table.invocation_record(2, 3, records))
    other = table.stream_arn.replace(table.name, "some-other-table")  # a too-narrow allow-list
    code, out, _ = drain(
        "--queue", queue, "--to", f"s3://{bucket}", "--allow-stream", other, "--quarantine", quarantine
    )  # fmt: skip
    assert code == 1 and "2 quarantined" in out
    assert queue_counts(moto_endpoint, queue) == (0, 0) and queue_counts(moto_endpoint, quarantine) == (2, 0)
    code, out, err = drain(
        "--queue", quarantine, "--to", f"s3://{bucket}", "--allow-stream", table.stream_arn
    )
    assert code == 0, out + err
    assert "2 replayed; 4 records recovered" in out and "2 deleted" in out
    assert queue_counts(moto_endpoint, quarantine) == (0, 0)
    assert len([k for k in keys(moto_endpoint, bucket) if k.endswith("records.jsonl.gz")]) == 2
