"""`replayer replay` and `replayer fetch` end to end: CLI -> moto over HTTP -> archive."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.archive.layout import range_path
from replayer.cli import app
from replayer.parse import parse_message
from tests.support import ROOT
from tests.support.aws import DynamoTable, client, make_queue
from tests.support.events import EVENTS, load_event
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


def test_a_reader_option_reaches_the_dry_run_and_the_run_alike(table: DynamoTable, tmp_path: Path) -> None:
    """Every command builds the core from its settings in one place: --max-records-per-range binds both."""
    table.put(4)
    record = json.dumps(table.invocation_record(0, 3))
    capped = ("--max-records-per-range", "2", "--json")
    (planned,) = json.loads(run("replay", "--dry-run", *capped, input=record).stdout)["ranges"]
    assert (
        planned["outcome"] == "planned"
        and "would be rejected: range spans more than its batch" in planned["reason"]
    )
    (done,) = json.loads(run("replay", "--to", f"file:{tmp_path}", *capped, input=record).stdout)["ranges"]
    assert done["outcome"] == "rejected" and done["reason"].startswith("range spans more than its batch")


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
    assert planned["outcome"] == "planned" and planned["reason"].startswith("would read ")
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


@pytest.mark.parametrize("content", ["", "[]", "\n\n"])
def test_empty_input_says_so_and_exits_0(content: str, tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(content)
    result = run("replay", str(path), "--to", "-")
    assert result.exit_code == 0
    assert f"no invocation records found in {path}" in result.stderr
    assert result.stdout == ""  # no empty table, no stray summary


def test_empty_stdin_says_so_and_exits_0() -> None:
    result = run("replay", "--to", "-", input="")
    assert result.exit_code == 0 and "no invocation records found in <stdin>" in result.stderr


def test_a_missing_input_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run("replay", str(tmp_path / "missing.json"), "--to", "-")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.json'}: no such file"


def test_jsonl_output_is_a_line_per_range_then_totals(table: DynamoTable, tmp_path: Path) -> None:
    table.put(4)
    records = table.stream_records()
    ranges = [table.invocation_record(0, 1, records), table.invocation_record(2, 3, records)]
    result = run("replay", "--to", f"file:{tmp_path}", "-o", "jsonl", input=json.dumps(ranges))
    assert result.exit_code == 0, result.output
    *lines, totals = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["outcome"] for line in lines] == ["replayed", "replayed"]
    assert {line["range"]["range_id"] for line in lines} == {parse_message(r)[0].range_id for r in ranges}
    assert totals["totals"]["records_recovered"] == 4 and totals["exit_code"] == 0


def test_quiet_prints_only_the_summary_line(table: DynamoTable, tmp_path: Path) -> None:
    table.put(2)
    result = run("replay", "-q", "--to", f"file:{tmp_path}", input=json.dumps(table.invocation_record(0, 1)))
    assert result.exit_code == 0
    assert result.stdout == "1 replayed; 2 records recovered\n"
    assert result.stderr == ""


def test_verbose_logs_info_lines_on_stderr(table: DynamoTable, tmp_path: Path) -> None:
    table.put(2)
    quiet = run("replay", "--to", f"file:{tmp_path / 'a'}", input=json.dumps(table.invocation_record(0, 1)))
    chatty = run(
        "replay", "-v", "--to", f"file:{tmp_path / 'b'}", input=json.dumps(table.invocation_record(0, 1))
    )
    assert '"range_done"' not in quiet.stderr
    assert '"range_done"' in chatty.stderr and '"range_done"' not in chatty.stdout


def test_h_help_order_and_completion() -> None:
    result = run("-h")
    assert result.exit_code == 0
    commands = re.findall(r"^│ ([a-z]+) {2,}", result.stdout.split("Commands", 1)[1], re.M)
    assert commands[:7] == ["replay", "fetch", "redrive", "drain", "run", "status", "demo"]
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout
    assert run("replay", "-h").exit_code == 0


def test_the_docs_walk_through_record_replays(table: DynamoTable, tmp_path: Path) -> None:
    """The walk-through's example invocation record is one replayer reads (a dry run plans it)."""
    readme = (ROOT / "docs" / "getting-started.md").read_text()
    block = readme.split("<!-- example-record:start -->", 1)[1].split("<!-- example-record:end -->", 1)[0]
    record = json.loads(block.split("```json", 1)[1].split("```", 1)[0])
    result = run("replay", "--dry-run", "--json", input=json.dumps(record))
    assert result.exit_code == 0, result.output
    (planned,) = json.loads(result.stdout)["ranges"]
    assert (
        planned["outcome"] == "planned"
        and planned["range"]["shard_id"] == "shardId-00000001714521600000-1a2b3c4d"
    )


def test_run_says_where_it_listens_and_what_it_consumes_in_a_json_log_line(
    moto_endpoint: str, tmp_path: Path
) -> None:
    queue = make_queue(moto_endpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "replayer", "run", "--queue", queue, "--to", f"file:{tmp_path}",
         "--allow-stream", "*", "--http-port", "0", "--http-host", "127.0.0.1", "--wait-seconds", "1",
         "--log-level", "info"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=ROOT, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if '"service_started"' in line:
            break
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    events = [json.loads(line) for line in seen]  # every stderr line is a JSON log line: no banner
    started = events[-1]
    assert started["event"] == "service_started" and started["queue"] == queue
    assert started["to"] == [f"file:{tmp_path}"] and started["concurrency"] == 8
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*", started["http"])
    assert process.returncode == 0


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


def test_redrive_of_an_empty_archive_says_so_and_exits_0(tmp_path: Path) -> None:
    result = run("redrive", "--from", f"file:{tmp_path}", "--to", "lambda:repair", "--no-preflight")
    assert result.exit_code == 0, result.output
    assert f"no archived ranges found in file:{tmp_path}" in result.stderr and result.stdout == ""


def test_redrive_with_a_range_id_that_matches_nothing(table: DynamoTable, tmp_path: Path) -> None:
    table.put(2)
    assert (
        run("replay", "--to", f"file:{tmp_path}", input=json.dumps(table.invocation_record(0, 1))).exit_code
        == 0
    )
    result = run(
        "redrive",
        "--from",
        f"file:{tmp_path}",
        "--to",
        "lambda:repair",
        "--range-id",
        "0" * 32,
        "--no-preflight",
    )
    assert result.exit_code == 0, result.output
    assert f"no matching ranges found in file:{tmp_path}" in result.stderr


def test_replayer_to_with_commas_is_two_sinks_for_replay(
    table: DynamoTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    monkeypatch.setenv("REPLAYER_TO", f"file:{tmp_path / 'a'},file:{tmp_path / 'b'}")
    result = run("replay", "--json", input=json.dumps(table.invocation_record(0, 1)))
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.stdout)["ranges"]
    a, b = outcome["delivered_to"]
    assert a.startswith(str(tmp_path / "a") + "/") and b.startswith(str(tmp_path / "b") + "/")
    assert not list(tmp_path.glob("*,*"))  # no folder named after the whole variable


def test_options_arrive_as_typer_gives_them_without_its_pydantic_adapters() -> None:
    """Text, repeated, counted and flag options keep Typer's shapes; pydantic is never imported for them."""
    code = (
        "import sys, typer.main; from replayer import cli; "
        "cmd = typer.main.get_command(cli.load('replay')).commands['replay']; "
        "ctx = cmd.make_context('replay', ['f', 'g', '--to', 's3://a', '--to', '-', '-vv', '--json', "
        "'--concurrency', '3']); "
        "print(repr(ctx.params)); print('pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    params_text, pydantic_loaded = out.splitlines()
    params = eval(params_text)
    assert params["paths"] == ["f", "g"] and params["to"] == ["s3://a", "-"]
    assert params["verbose"] == 2 and params["as_json"] is True and params["dry_run"] is False
    assert params["concurrency"] == "3" and params["since"] is None and params["allow_streams"] == ()
    assert pydantic_loaded == "False"


@pytest.mark.parametrize("mode", ["--no-preflight", "--dry-run"])
def test_the_cyclic_gc_is_off_during_start_up_and_back_on_when_the_work_begins(
    mode: str, tmp_path: Path
) -> None:
    """`main` pauses the GC for start-up only: every command turns it back on (and freezes what
    start-up made) before its work."""
    record = EVENTS / "ddb_esm_record_no_millis.json"
    code = f"""
import gc, sys
from replayer import cli
during_start_up = []  # a collection seen while start-up was still going on
gc.callbacks.append(lambda phase, info: during_start_up.append(cli._gc_paused) if phase == "start" else None)
sys.argv = ["replayer", "replay", {str(record)!r}, "--to", "file:{tmp_path}", "{mode}", "--json"]
try:
    cli.main()
except SystemExit:
    pass
print(any(during_start_up), gc.isenabled(), gc.get_freeze_count() > 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[-1].split() == ["False", "True", "True"], out.stdout + out.stderr


def test_each_input_line_is_its_own_outcome_the_valid_ones_are_replayed(
    table: DynamoTable, tmp_path: Path
) -> None:
    table.put(7)
    records = table.stream_records()
    lines = [json.dumps(table.invocation_record(i, i, records)) for i in range(7)]
    lines[3] = '{"hello": "not an invocation record"}'  # line 4
    lines.insert(6, "{not json")  # line 7
    path = tmp_path / "failures.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "archive"
    result = run("replay", str(path), "--to", f"file:{out}", "--json")
    assert result.exit_code == 1, result.output  # something was rejected
    summary = json.loads(result.stdout)
    assert summary["totals"]["replayed"] == 6 and summary["totals"]["rejected"] == 2
    reasons = sorted(r["reason"] for r in summary["ranges"] if r["outcome"] == "rejected")
    assert reasons[0].startswith(f"{path}:4.$: unknown message") and reasons[1].startswith(
        f"{path}:7.$: invalid JSON"
    )
    for i in (0, 1, 2, 4, 5, 6):
        assert seqs(archived(out, table.invocation_record(i, i, records))) == seqs(records[i : i + 1])


def test_a_bad_first_line_or_array_element_hides_nothing(table: DynamoTable, tmp_path: Path) -> None:
    table.put(2)
    records = table.stream_records()
    good = [table.invocation_record(0, 0, records), table.invocation_record(1, 1, records)]
    (tmp_path / "first.jsonl").write_text("oops\n" + json.dumps(good[0]) + "\n")
    (tmp_path / "array.json").write_text(json.dumps([good[1], 42]))
    result = run("replay", str(tmp_path / "first.jsonl"), str(tmp_path / "array.json"), "--to", "-", "--json")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"')]
    assert len(lines) == 2  # both records printed by the - sink
    summary = json.loads(result.stderr[result.stderr.index("{\n") :])
    assert summary["totals"]["replayed"] == 2 and summary["totals"]["rejected"] == 2
    reasons = {r["reason"].split(": ")[0] for r in summary["ranges"] if r["outcome"] == "rejected"}
    assert reasons == {f"{tmp_path / 'first.jsonl'}:1.$", f"{tmp_path / 'array.json'}[1]"}
