"""Re-driving safely (#23): pacing, the breaker, staleness and the run ledger, end to end.

A real repair function runs in ministack (it records when each invocation started), the
archive and the table are on moto; the function is told to fail, is throttled by a proxy of
the suite's own, or succeeds; the table's items change after their records were archived.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.cli import app
from replayer.model import Failure
from replayer.parse import parse_message
from replayer.sinks.guard.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerOpen
from tests.support import ROOT
from tests.support.aws import DynamoTable
from tests.support.faultproxy import FaultProxy, Rule, aws_error
from tests.support.ministack import Ministack, RepairFunction

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def redrive(source: str, *args: str, codes: tuple[int, ...] = (0,)) -> tuple[int, dict[str, Any]]:
    result = run("redrive", "--from", source, "--json", *args)
    assert result.exit_code in codes, result.output
    return result.exit_code, json.loads(result.stdout)


def archive(table: DynamoTable, bounds: list[tuple[int, int]], to: str, tmp_path: Path) -> list[Failure]:
    stream = table.stream_records()
    records = [table.invocation_record(first, last, stream) for first, last in bounds]
    path = tmp_path / f"ranges-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(records))
    result = run("replay", str(path), "--to", to)
    assert result.exit_code == 0, result.output
    return [parse_message(r)[0] for r in records]


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def show(source: str, name: str) -> dict[str, Any]:
    result = run("runs", "show", name, "--from", source, "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def item(pk: str, payload: str, n: int = 0) -> dict[str, Any]:
    return {"pk": {"S": pk}, "n": {"N": str(n)}, "payload": {"S": payload}}


# ---- the breaker on its own (its clock is the test's)


async def test_the_breaker_opens_at_its_share_of_the_window_and_keeps_the_last_error() -> None:
    breaker = Breaker(0.5, 4)
    tripped: list[str] = []
    breaker.on_trip.append(tripped.append)
    for failed in (False, True, False):
        breaker.record(failed, "boom" if failed else None)
    assert breaker.state == CLOSED
    await breaker.admit()
    breaker.record(True, "RuntimeError: told to fail")
    assert breaker.state == OPEN and len(tripped) == 1
    assert "2 of the last 4 invocations failed" in tripped[0] and "RuntimeError: told to fail" in tripped[0]
    with pytest.raises(BreakerOpen):
        await breaker.admit()


async def test_in_the_service_an_open_breaker_pauses_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = Breaker(1.0, 2, cooldown=0.05, clock=lambda: now[0])
    breaker.record(True, "a")
    breaker.record(True, "b")
    assert breaker.state == OPEN
    now[0] = 1.0  # the cool-down is over: the next invocation is the trial
    await breaker.admit()
    assert breaker.state == HALF_OPEN
    breaker.record(True, "c")  # the trial failed: open again, for another cool-down
    assert breaker.state == OPEN and breaker.trips == 2
    now[0] = 2.0
    await breaker.admit()
    breaker.abandon()  # the trial was throttled (or cut short): it says nothing, the next one is the trial
    assert breaker.state == OPEN and breaker.trips == 2
    await breaker.admit()
    assert breaker.state == HALF_OPEN
    breaker.record(False)
    assert breaker.state == CLOSED and breaker.failed == 0


def test_off_means_never() -> None:
    breaker = Breaker(None, 2)
    for _ in range(5):
        breaker.record(True, "x")
    assert breaker.state == CLOSED


def test_bad_options_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (
        ["--rate", "0"],
        ["--stop-at-error-rate", "1.5"],
        ["--stop-at-error-rate", "0"],
        ["--run", "../escape"],
        ["--ramp", "soon"],
        ["--max-inflight", "0"],
    ):
        result = run("redrive", "--from", f"file:{tmp_path}", "--to", "lambda:f", *args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and args[0] in result.stderr


def test_the_runs_commands_help_renders_within_100_columns() -> None:
    for command in (["runs"], ["runs", "show"], ["runs", "cancel"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "100"}, terminal_width=100)
        assert result.exit_code == 0, result.output
        assert "s3://BUCKET[/PREFIX]" in result.output
        assert all(len(line) <= 100 for line in result.output.splitlines())


# ---- end to end


def test_rate_and_ramp_hold_the_function_to_the_rate(
    table: DynamoTable, bucket: str, repair: RepairFunction, ministack: Ministack, tmp_path: Path
) -> None:
    table.put(40)
    archive(table, [(i, i + 9) for i in range(0, 40, 10)], f"s3://{bucket}/a", tmp_path)
    ministack.client("lambda").invoke(FunctionName=repair.name, Payload=b'{"Records": []}')  # warm
    code, summary = redrive(
        f"s3://{bucket}/a", "--to", f"lambda:{repair.name}", "--rate", "10", "--ramp", "1s",
        "--max-records-per-invoke", "5", "--concurrency", "4", "--max-inflight", "2", "--run", "paced",
    )  # fmt: skip
    assert code == 0 and summary["totals"]["replayed"] == 4 and summary["run"] == "paced"
    times, calls = repair.call_times()[1:], repair.calls()[1:]
    assert len(calls) == 8 and sorted(r for c in calls for r in seqs(c)) == sorted(
        seqs(table.stream_records())
    )
    # The function's own clock: from any invocation to a later one, the records sent in between are
    # at most the rate's worth of that time, give or take one invocation and a second of jitter.
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            between = sum(len(c) for c in calls[i:j])
            assert between <= 10 * (times[j] - times[i]) + 5 + 10, (i, j, times)
    print(
        f"paced: {35 / (times[-1] - times[0]):.1f} records/s between the first and last invocation (--rate 10)"
    )
    ledger = show(f"s3://{bucket}/a", "paced")
    assert ledger["state"] == "completed" and ledger["totals"] == {
        "ranges": 4, "sent": 40, "stale": 0, "superseded": 0, "failed": 0,
    }  # fmt: skip
    assert all(r["executed_versions"] == ["$LATEST"] for r in ledger["ranges"])


def test_a_failing_function_trips_the_breaker_early_and_a_rerun_resumes_the_rest(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str, tmp_path: Path
) -> None:
    repair = RepairFunction(ministack, FAIL_ON='"x"')
    table.put(20)
    source = f"file:{tmp_path / 'archive'}"
    archive(table, [(i, i + 1) for i in range(0, 20, 2)], source, tmp_path)
    to = f"lambda:{repair.name}"
    options = ("--invoke-retries", "0", "--error-window", "4", "--concurrency", "1", "--run", "fix-1")
    code, summary = redrive(source, "--to", to, *options, codes=(3,))
    assert code == 3 and summary["exit_code"] == 3 and summary["stopped"]["by"] == "breaker"
    assert "2 of the last" in summary["stopped"]["reason"]
    reason = summary["stopped"]["reason"]  # the function's own error type and message first (#22.6)
    assert "the function's last error: Runtime.HandlerError: told to fail" in reason
    assert len(repair.calls()) == 2  # stopped early: 2 of 10 ranges tried, none after the trip
    kinds = [r["outcome"] for r in summary["ranges"]]
    assert kinds == ["retry"] * 10
    assert sum("not started: the run stopped" in r["reason"] for r in summary["ranges"]) == 8
    ledger = show(source, "fix-1")
    assert ledger["state"] == "stopped" and "told to fail on this record" in ledger["last_error"]
    assert ledger["totals"]["failed"] == 4 and ledger["totals"]["sent"] == 0

    repair.configure()  # the fix: the function succeeds now
    code, summary = redrive(source, "--to", to, *options)
    assert code == 0 and summary["totals"]["replayed"] == 10
    assert sorted(r for c in repair.calls()[2:] for r in seqs(c)) == sorted(seqs(table.stream_records()))
    ledger = show(source, "fix-1")
    assert ledger["state"] == "completed" and ledger["attempts"] == 2
    assert ledger["totals"] == {"ranges": 10, "sent": 20, "stale": 0, "superseded": 0, "failed": 0}

    listed = run("runs", "--from", source)
    assert listed.exit_code == 0 and "fix-1" in listed.stdout and "completed" in listed.stdout
    assert all(len(line) <= 100 for line in listed.stdout.splitlines())


def test_throttling_is_waited_out_and_never_trips_the_breaker(
    table: DynamoTable, bucket: str, repair: RepairFunction, ministack: Ministack,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    table.put(6)
    archive(table, [(0, 1), (2, 3), (4, 5)], f"s3://{bucket}/t", tmp_path)
    proxy = FaultProxy(ministack.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # every throttle reaches replayer's own pacing
    invoke = f"POST /2015-03-31/functions/{repair.name}/invocations"
    try:
        proxy.add(Rule(lambda r: r.operation == invoke, respond=aws_error("TooManyRequestsException", status=429),
                       times=3))  # fmt: skip
        code, summary = redrive(
            f"s3://{bucket}/t", "--to", f"lambda:{repair.name}", "--error-window", "2", "--run", "thr",
            "--no-preflight",
        )  # fmt: skip
    finally:
        proxy.close()
    assert code == 0 and summary["totals"]["replayed"] == 3
    assert len(repair.calls()) == 3
    ledger = show(f"s3://{bucket}/t", "thr")
    assert ledger["state"] == "completed" and sum(r["throttled"] for r in ledger["ranges"]) == 3
    assert ledger["last_error"] is None


def test_skip_stale_sends_only_what_the_table_still_holds(
    table: DynamoTable, bucket: str, repair: RepairFunction, tmp_path: Path
) -> None:
    ddb = table.ddb
    for i in range(3):
        ddb.put_item(TableName=table.name, Item=item(f"item-{i}", "v1", i))
    ddb.delete_item(TableName=table.name, Key={"pk": {"S": "item-0"}})
    archive(table, [(0, 3)], f"s3://{bucket}/s", tmp_path)
    stream = seqs(table.stream_records())
    # after archiving: item-0 is back (its REMOVE and its INSERT are both out of date), item-1 changed
    ddb.put_item(TableName=table.name, Item=item("item-0", "again"))
    ddb.put_item(TableName=table.name, Item=item("item-1", "v2", 1))
    code, summary = redrive(
        f"s3://{bucket}/s", "--to", f"lambda:{repair.name}", "--skip-stale", "--run", "stale"
    )
    assert code == 0
    assert [seqs(c) for c in repair.calls()] == [[stream[2]]]  # item-2 alone is still as recorded
    (outcome,) = summary["ranges"]
    assert any("3 stale records not sent" in n and stream[0] in n for n in outcome["notes"])
    (account,) = show(f"s3://{bucket}/s", "stale")["ranges"]
    assert (account["sent"], account["stale"], account["failed"]) == (1, 3, 0)
    assert account["stale_records"] == [stream[0], stream[1], stream[3]]


def test_latest_per_key_sends_only_the_newest_record_of_each_item_across_ranges(
    table: DynamoTable, bucket: str, repair: RepairFunction, tmp_path: Path
) -> None:
    ddb = table.ddb
    for version in ("v1", "v2"):
        for i in range(2):
            ddb.put_item(TableName=table.name, Item=item(f"item-{i}", version, i))
    ddb.put_item(TableName=table.name, Item=item("other", "v1"))
    archive(table, [(0, 1), (2, 4)], f"s3://{bucket}/l", tmp_path)
    stream = seqs(table.stream_records())
    code, summary = redrive(
        f"s3://{bucket}/l", "--to", f"lambda:{repair.name}", "--latest-per-key", "--run", "latest"
    )
    assert code == 0 and summary["totals"]["replayed"] == 2
    assert sorted(r for c in repair.calls() for r in seqs(c)) == sorted(stream[2:])
    accounts = show(f"s3://{bucket}/l", "latest")["ranges"]
    assert [(a["sent"], a["superseded"]) for a in accounts] == [(0, 2), (3, 0)]
    assert accounts[0]["superseded_records"] == stream[:2]
    # After --where: a record not selected supersedes nothing (the v1 records are the newest selected).
    before = len(repair.calls())
    where = json.dumps({"dynamodb": {"NewImage": {"payload": {"S": ["v1"]}}}})
    code, _ = redrive(
        f"s3://{bucket}/l", "--to", f"lambda:{repair.name}", "--latest-per-key", "--where", where, "--force"
    )
    assert code == 0
    assert sorted(r for c in repair.calls()[before:] for r in seqs(c)) == sorted([*stream[:2], stream[4]])


def test_a_run_is_cancelled_from_another_process_and_resumed(
    table: DynamoTable, bucket: str, repair: RepairFunction, tmp_path: Path
) -> None:
    table.put(30)
    source = f"s3://{bucket}/c"
    archive(table, [(i, i + 2) for i in range(0, 30, 3)], source, tmp_path)
    command = [
        sys.executable, "-m", "replayer", "redrive", "--from", source, "--to", f"lambda:{repair.name}",
        "--rate", "2", "--concurrency", "1", "--run", "slow", "--json",
    ]  # fmt: skip
    child = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not repair.calls() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert repair.calls(), "the run never started"
        cancelled = run("runs", "cancel", "slow", "--from", source)
        assert cancelled.exit_code == 0, cancelled.output
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 4, err.decode()
    assert err.decode().startswith("run slow ")  # the name comes first
    summary = json.loads(out)
    assert summary["stopped"]["by"] == "cancelled"
    sent = len(repair.calls())
    assert sent < 10
    ledger = show(source, "slow")
    assert ledger["state"] == "cancelled" and ledger["cancel_requested"] is not None
    assert ledger["totals"]["sent"] == 3 * sent

    code, _ = redrive(source, "--to", f"lambda:{repair.name}", "--run", "slow")
    assert code == 0 and len(repair.calls()) == 10
    assert sorted(r for c in repair.calls() for r in seqs(c)) == sorted(seqs(table.stream_records()))
    ledger = show(source, "slow")
    assert ledger["state"] == "completed" and ledger["totals"]["sent"] == 30
    listed = json.loads(run("runs", "--from", source, "--json").stdout)
    assert [(r["name"], r["state"]) for r in listed["runs"]] == [("slow", "completed")]
    again = run("runs", "cancel", "slow", "--from", source)
    assert again.exit_code == 1 and "not running" in again.stderr


def test_skip_stale_without_batchgetitem_is_a_pre_flight_error_before_any_invocation(
    table: DynamoTable, bucket: str, repair: RepairFunction, proxy: FaultProxy, tmp_path: Path
) -> None:
    table.put(2)
    archive(table, [(0, 1)], f"s3://{bucket}/p", tmp_path)
    proxy.add(Rule(lambda r: r.operation == "BatchGetItem", respond=aws_error("AccessDeniedException")))
    result = run("redrive", "--from", f"s3://{bucket}/p", "--to", f"lambda:{repair.name}", "--skip-stale")
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "dynamodb:BatchGetItem" in line and table.name in line
    assert repair.calls() == []


def test_replay_stops_on_the_breaker_too(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str, tmp_path: Path
) -> None:
    repair = RepairFunction(ministack, FAIL_ON='"x"')
    table.put(8)
    path = tmp_path / "ranges.json"
    path.write_text(json.dumps([table.invocation_record(i, i + 1) for i in range(0, 8, 2)]))
    result = run(
        "replay", str(path), "--to", f"lambda:{repair.name}", "--invoke-retries", "0", "--error-window", "2",
        "--stop-at-error-rate", "1", "--concurrency", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["stopped"]["by"] == "breaker" and len(repair.calls()) == 2
    assert [r["outcome"] for r in summary["ranges"]] == ["retry"] * 4


async def test_in_the_service_the_breaker_pauses_tries_again_and_nothing_is_dead_lettered(
    table: DynamoTable, moto_endpoint: str, ministack: Ministack, lambda_endpoint: str
) -> None:
    from replayer.aws import Clients
    from replayer.observe import Recorder
    from replayer.sources import build_replayer
    from replayer.sources.sqs import Service
    from tests.support.aws import make_queue, queue_counts, send
    from tests.support.service import sample, settings, wait_for

    repair = RepairFunction(ministack, FAIL_FIRST="2")
    table.put(6)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, *(table.invocation_record(i, i + 1, records) for i in range(0, 6, 2)))
    config = settings(
        queue, f"lambda:{repair.name}", concurrency=1, invoke_retries=1, error_window=2, stop_at_error_rate=1.0,
        breaker_cooldown=1.0, retry_base_seconds=1, retry_max_seconds=1,
    )  # fmt: skip
    metrics = Recorder(prometheus=True)
    async with Clients() as clients:
        replayer, _ = build_replayer(config, clients, metrics)
        service = Service(config, replayer, recorder=metrics)
        running = asyncio.create_task(service.run())
        try:
            await wait_for(lambda: queue_counts(moto_endpoint, queue) == (0, 0), "the queue to empty", 120)
        finally:
            service.stop()
            summary = await running
    assert summary.messages["deleted"] == 3
    assert sample(metrics, "replayer_redrive_breaker_trips_total") == 1
    assert sample(metrics, "replayer_redrive_failed_invocations_total") == 2
    assert sample(metrics, "replayer_redrive_sent_total") == 6
    assert sample(metrics, "replayer_redrive_breaker_open") == 0  # closed again after the trial
    times = repair.call_times()
    assert times[2] - times[1] >= 0.8  # the pause: the trial came after the cool-down, not at once
    assert sorted(r for c in repair.calls()[2:] for r in seqs(c)) == sorted(seqs(records))


def test_the_lambda_deployment_skips_stale_records_by_its_environment_and_says_so_in_emf(
    table: DynamoTable,
    repair: RepairFunction,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import copy

    import structlog

    from replayer import lambda_handler
    from tests.support.events import load_event
    from tests.support.handler import LambdaContext, emf_lines

    ddb = table.ddb
    for i in range(3):
        ddb.put_item(TableName=table.name, Item=item(f"item-{i}", "v1", i))
    record = table.invocation_record(0, 2)
    stream = seqs(table.stream_records())
    ddb.put_item(TableName=table.name, Item=item("item-1", "v2", 1))  # after the failure: record 1 is stale
    message = copy.deepcopy(load_event("sqs_lambda_event_ddb.json")["Records"][0])
    message.update(messageId="m-1", body=json.dumps(record))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")  # EMF: the Lambda environment (stdout)
    monkeypatch.setenv("REPLAYER_TO", f"lambda:{repair.name}")
    monkeypatch.setenv("REPLAYER_SKIP_STALE", "true")
    monkeypatch.setenv("REPLAYER_RATE", "50")
    try:
        answer = lambda_handler.handler({"Records": [message]}, LambdaContext())
    finally:
        lambda_handler.reset()
        structlog.reset_defaults()
    assert answer["batchItemFailures"] == []
    assert [seqs(c) for c in repair.calls()] == [[stream[0], stream[2]]]
    metrics = emf_lines(capsys.readouterr().out)[-1]
    assert (metrics["RedriveSent"], metrics["RedriveStale"], metrics["RedriveInvocations"]) == (2, 1, 1)


def test_drain_stops_taking_messages_when_the_breaker_trips_and_loses_none(
    table: DynamoTable, moto_endpoint: str, ministack: Ministack, lambda_endpoint: str
) -> None:
    from tests.support.aws import make_queue, queue_counts, send

    repair = RepairFunction(ministack, FAIL_ON='"x"')
    table.put(8)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, *(table.invocation_record(i, i + 1, records) for i in range(0, 8, 2)))
    result = run(
        "drain", "--queue", queue, "--to", f"lambda:{repair.name}", "--invoke-retries", "0",
        "--error-window", "2", "--stop-at-error-rate", "1", "--concurrency", "1", "--wait-seconds", "1",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["stopped"]["by"] == "breaker" and "told to fail" in summary["stopped"]["reason"]
    assert len(repair.calls()) == 2  # nothing invoked after the trip
    assert summary["messages"]["deleted"] == 0
    visible, in_flight = queue_counts(moto_endpoint, queue)
    assert visible + in_flight == 4  # every message is still on the queue
