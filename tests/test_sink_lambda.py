"""The `lambda:` sink: a repair function really runs in ministack and keeps what it received.

Streams and archives live in moto; the function and what it wrote live in ministack.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.archive.layout import range_path
from replayer.aws import Clients
from replayer.cli import app
from replayer.core import Replayer
from replayer.errors import ConfigError
from replayer.model import Failure, Outcome, OutcomeKind, StreamKind, StreamRecord
from replayer.parse import parse_message
from replayer.readers import Readers
from replayer.sinks import LambdaSink, SinkOptions, sink_from_uri
from replayer.sinks.lambda_ import (
    CLIENT_CONTEXT_LIMIT,
    DEFAULT_MAX_PAYLOAD,
    PAYLOAD_LIMIT,
    FunctionFailed,
    chunks,
    client_context,
    event_payload,
    function_error,
    log_tail,
    parse_target,
    unconfirmed,
)
from tests.support.aws import DynamoTable, KinesisStream, client
from tests.support.faultproxy import FaultProxy, Rule, aws_error
from tests.support.ministack import Ministack, RepairFunction

ANY_STREAM = AllowList.of(["*"])  # deny by default: these tests read any stream

runner = CliRunner()
FAST = {"retry_wait": 0.01, "retry_wait_max": 0.05}  # backoff is tested by tenacity; the counts are ours


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def seq_calls(repair: RepairFunction) -> list[list[str]]:
    return [seqs(call) for call in repair.calls()]


def record(n: int, size: int = 10) -> StreamRecord:
    return StreamRecord(
        str(1000 + n), json.dumps({"dynamodb": {"SequenceNumber": str(1000 + n)}, "x": "y" * size}).encode()
    )


async def expected_records(failure: Failure) -> list[dict[str, Any]]:
    """What the reader recovers for the range: the records the function must receive, as JSON."""
    async with Clients() as clients:
        result = await Readers(clients).for_failure(failure).read(failure)
    return [json.loads(r.json) for r in result.records]


async def replay(failure: Failure, *uris: str, clients: Clients | None = None, **options: Any) -> Outcome:
    async with Clients() as own:
        use = clients or own
        sinks = [sink_from_uri(uri, use, SinkOptions(**{**FAST, **options})) for uri in uris]
        return await Replayer(use, sinks, allow=ANY_STREAM).replay(failure)


def put_marked(table: DynamoTable, marks: dict[int, str], n: int) -> None:
    """Items 0..n-1; item i carries the payload marks[i] (a word the repair function reacts to)."""
    for i in range(n):
        table.put(1, start=i, payload=marks.get(i, "plain"))


# --- pure parts: payload, chunking, Lambda's batchItemFailures rule ---------------------------------


def test_event_payload_is_the_records_joined_in_the_event_envelope() -> None:
    records = [record(1), record(2)]
    payload = event_payload(records)
    assert payload == b'{"Records":[' + records[0].json + b"," + records[1].json + b"]}"
    assert [r["dynamodb"]["SequenceNumber"] for r in json.loads(payload)["Records"]] == ["1001", "1002"]


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=430), max_size=40),
    max_records=st.integers(min_value=1, max_value=8),
    max_bytes=st.integers(min_value=500, max_value=3000),
)
def test_chunks_keep_order_and_limits_and_are_as_full_as_allowed(
    sizes: list[int], max_records: int, max_bytes: int
) -> None:
    records = [record(i, size) for i, size in enumerate(sizes)]
    batches = list(chunks(records, max_records=max_records, max_bytes=max_bytes))
    assert [r for b in batches for r in b] == records
    for i, batch in enumerate(batches):
        assert 1 <= len(batch) <= max_records
        assert len(event_payload(batch)) <= max_bytes
        if i + 1 < len(batches):  # the next record did not fit: as few invocations as the limits allow
            grown = (*batch, batches[i + 1][0])
            assert len(grown) > max_records or len(event_payload(grown)) > max_bytes


def test_a_record_too_large_for_any_invocation_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="cannot be re-driven"):
        next(chunks([record(1), record(2, 5000)], max_records=10, max_bytes=1000))


@pytest.mark.parametrize(
    "answer",
    [b"", b"null", b"{}", b'"done"', b'{"batchItemFailures":[]}', b'{"batchItemFailures":null}', b'{"ok":1}'],
)
def test_answers_without_failures_confirm_every_record(answer: bytes) -> None:
    assert unconfirmed([record(1), record(2)], answer) == ()


def test_the_lowest_reported_sequence_number_wins() -> None:
    records = [record(i) for i in range(5)]
    answer = json.dumps({"batchItemFailures": [{"itemIdentifier": "1003"}, {"itemIdentifier": "1001"}]})
    assert unconfirmed(records, answer.encode()) == tuple(records[1:])


@pytest.mark.parametrize(
    "items",
    [
        "not a list",
        {"itemIdentifier": "1001"},
        [{"itemIdentifier": ""}],
        [{"itemIdentifier": None}],
        [{"itemIdentifier": 1001}],
        [{"id": "1001"}],
        ["1001"],
        [{"itemIdentifier": "999"}],  # not a record of this batch
        [{"itemIdentifier": "1001"}, {"itemIdentifier": "nope"}],
    ],
)
def test_malformed_batch_item_failures_fail_the_whole_invocation(items: Any) -> None:
    with pytest.raises(FunctionFailed):
        unconfirmed([record(1), record(2)], json.dumps({"batchItemFailures": items}).encode())


def test_an_answer_that_is_not_json_fails_the_invocation() -> None:
    with pytest.raises(FunctionFailed, match="not JSON"):
        unconfirmed([record(1)], b"{oops")


@pytest.mark.parametrize(
    ("spec", "function", "qualifier", "region"),
    [
        ("repair", "repair", None, None),
        ("repair:live", "repair", "live", None),
        ("repair:$LATEST", "repair", "$LATEST", None),
        ("arn:aws:lambda:eu-west-1:123456789012:function:repair", "arn:aws:lambda:eu-west-1:123456789012:function:repair", None, "eu-west-1"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:repair:7", "arn:aws:lambda:eu-west-1:123456789012:function:repair", "7", "eu-west-1"),
    ],
)  # fmt: skip
def test_lambda_targets(spec: str, function: str, qualifier: str | None, region: str | None) -> None:
    target = parse_target(spec)
    assert (target.function, target.qualifier, target.region) == (function, qualifier, region)
    sink = sink_from_uri(f"lambda:{spec}", Clients(), SinkOptions(max_records_per_invoke=7, invoke_retries=1))
    assert isinstance(sink, LambdaSink) and sink.uri == f"lambda:{spec}" and not sink.durable
    assert (sink.max_records_per_invoke, sink.invoke_retries) == (7, 1)


@pytest.mark.parametrize(
    "uri", ["lambda:", "lambda:a/b", "lambda:x:y:z", "lambda:arn:aws:s3:::bucket", "lambda:" + "n" * 65]
)
def test_bad_lambda_uris_say_what_is_accepted(uri: str) -> None:
    with pytest.raises(ConfigError, match="expected lambda:NAME"):
        sink_from_uri(uri, Clients())


def test_default_records_per_invoke_is_the_batch_size_else_100() -> None:
    sink = LambdaSink(Clients(), parse_target("f"))
    assert sink.records_per_invoke(Failure(StreamKind.DYNAMODB, "arn", "s", "1", "2")) == 100
    assert sink.records_per_invoke(Failure(StreamKind.DYNAMODB, "arn", "s", "1", "2", batch_size=7)) == 7
    assert (
        LambdaSink(Clients(), parse_target("f"), max_records_per_invoke=2).records_per_invoke(
            Failure(StreamKind.DYNAMODB, "arn", "s", "1", "2", batch_size=7)
        )
        == 2
    )


# --- against a function that really runs ------------------------------------------------------------


def test_replay_to_lambda_delivers_the_exact_records_in_order(
    table: DynamoTable, repair: RepairFunction, tmp_path: Path
) -> None:
    table.put(8)
    stream = table.stream_records()
    invocation = table.invocation_record(1, 5)
    (tmp_path / "failure.json").write_text(json.dumps(invocation))
    result = run("replay", str(tmp_path / "failure.json"), "--to", f"lambda:{repair.name}", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["totals"]["replayed"] == 1
    assert summary["ranges"][0]["delivered_to"] == [f"lambda:{repair.name}"]
    (call,) = repair.calls()
    assert seqs(call) == seqs(stream[1:6])
    assert [r["dynamodb"]["Keys"] for r in call] == [r["dynamodb"]["Keys"] for r in stream[1:6]]
    (failure,) = parse_message(invocation)
    assert call == asyncio.run(expected_records(failure))
    assert {r["eventSourceARN"] for r in call} == {table.stream_arn}
    assert {r["eventSource"] for r in call} == {"aws:dynamodb"}
    # the mapping is unknown (the emulator has none) and its filter would apply: warned, once per range
    assert result.stderr.count('"mapping_unknown"') == 1 and repair.name in result.stderr
    archived = run("replay", str(tmp_path / "failure.json"), "--to", f"file:{tmp_path / 'a'}", "--json")
    assert (
        archived.exit_code == 0 and "mapping_unknown" not in archived.stderr
    )  # no filter applies to an archive
    unfiltered = run("replay", str(tmp_path / "failure.json"), "--to", f"lambda:{repair.name}", "--no-filter")
    assert unfiltered.exit_code == 0 and "mapping_unknown" not in unfiltered.stderr


async def test_invocations_hold_at_most_batch_size_records_by_default(
    table: DynamoTable, repair: RepairFunction
) -> None:
    table.put(7)
    stream = table.stream_records()
    (failure,) = parse_message(table.invocation_record(0, 6, batchSize=3))
    outcome = await replay(failure, f"lambda:{repair.name}")
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert seq_calls(repair) == [seqs(stream[0:3]), seqs(stream[3:6]), seqs(stream[6:7])]


def test_max_records_per_invoke_option(table: DynamoTable, repair: RepairFunction, tmp_path: Path) -> None:
    table.put(7)
    stream = table.stream_records()
    (tmp_path / "f.json").write_text(json.dumps(table.invocation_record(0, 6)))
    result = run(
        "replay", str(tmp_path / "f.json"), "--to", f"lambda:{repair.name}", "--max-records-per-invoke", "2"
    )
    assert result.exit_code == 0, result.output
    assert seq_calls(repair) == [seqs(stream[i : i + 2]) for i in range(0, 7, 2)]


async def test_big_records_are_split_under_the_6_mb_payload_limit(
    table: DynamoTable, repair: RepairFunction
) -> None:
    table.put(20, payload="p" * 330_000)  # 20 records of ~330 KB: one batch by count, ~6.6 MB by size
    (failure,) = parse_message(table.invocation_record(0, 19))
    async with Clients() as clients:
        result = await Readers(clients).for_failure(failure).read(failure)
    size = {r.sequence_number: len(r.json) for r in result.records}
    outcome = await replay(failure, f"lambda:{repair.name}")
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    calls = seq_calls(repair)
    assert len(calls) >= 2
    assert [s for call in calls for s in call] == [r.sequence_number for r in result.records]

    def payload_size(call: list[str]) -> int:
        return len(b'{"Records":[]}') + sum(size[s] for s in call) + len(call) - 1

    assert all(payload_size(call) <= PAYLOAD_LIMIT for call in calls)
    for this, following in itertools.pairwise(calls):  # each invocation as full as the margin allows
        assert payload_size([*this, following[0]]) > DEFAULT_MAX_PAYLOAD
    assert [json.loads(r.json) for r in result.records] == [r for call in repair.calls() for r in call]


async def test_a_failing_function_is_retried_then_the_range_is_left_for_retry(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, FAIL_FIRST="99")
    table.put(3)
    stream = table.stream_records()
    (failure,) = parse_message(table.invocation_record(0, 2))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=2)
    assert outcome.kind is OutcomeKind.RETRY and not outcome.settled
    assert "function error Unhandled" in outcome.reason and "3 invocations" in outcome.reason
    own_words = r"^lambda:\S+: \S*Error: told to fail invocation [0-9] \(function error Unhandled\)"
    assert re.search(own_words, outcome.reason)  # the function's own words, first
    assert seq_calls(repair) == [seqs(stream)] * 3


def test_a_function_errors_type_and_message_are_one_capped_line_and_its_log_tail_is_read() -> None:
    answer = json.dumps({"errorType": "KeyError", "errorMessage": "'sku'\n  at line 3\n" + "x" * 500})
    error = function_error(answer.encode())
    assert error.startswith("KeyError: 'sku' at line 3 xxx") and error.endswith("...") and len(error) == 200
    assert function_error(b"not json") == "" and function_error(b'{"errorType": "Timeout"}') == "Timeout"
    tail = base64.b64encode(b"START\n[ERROR] KeyError: 'sku'\nEND RequestId: 1\n").decode()
    assert log_tail(tail) == ["START", "[ERROR] KeyError: 'sku'", "END RequestId: 1"]
    assert log_tail(None) == [] and log_tail("%%%") == []


async def test_a_function_that_recovers_gets_the_whole_batch_again(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, FAIL_FIRST="2")
    table.put(4)
    stream = table.stream_records()
    (failure,) = parse_message(table.invocation_record(0, 3))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=3)
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert seq_calls(repair) == [seqs(stream)] * 3


@pytest.mark.parametrize(
    ("marks", "per_invoke", "expected"),
    [
        (
            {2: "reject-once", 4: "reject-once"},
            None,
            [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5]],
        ),  # lowest of two wins
        ({1: "reject-once", 4: "reject-once"}, 3, [[0, 1, 2], [1, 2], [3, 4, 5], [4, 5]]),  # within its batch
        ({0: "reject-once"}, None, [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]),
    ],
)
async def test_batch_item_failures_redrive_from_the_lowest_reported_record(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str,
    marks: dict[int, str], per_invoke: int | None, expected: list[list[int]],
) -> None:  # fmt: skip
    repair = RepairFunction(ministack, REJECT_ONCE="reject-once")
    put_marked(table, marks, 6)
    stream = seqs(table.stream_records())
    (failure,) = parse_message(table.invocation_record(0, 5))
    outcome = await replay(failure, f"lambda:{repair.name}", max_records_per_invoke=per_invoke)
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert seq_calls(repair) == [[stream[i] for i in call] for call in expected]


async def test_records_never_confirmed_leave_the_range_for_retry(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, REJECT_ALWAYS="poison")
    put_marked(table, {3: "poison"}, 6)
    stream = seqs(table.stream_records())
    (failure,) = parse_message(table.invocation_record(0, 5))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=2)
    assert outcome.kind is OutcomeKind.RETRY
    assert f"records from {stream[3]} not confirmed" in outcome.reason
    # The first invocation moved the checkpoint (3 confirmed): only the 3 that did not count.
    assert seq_calls(repair) == [stream, stream[3:], stream[3:], stream[3:]]
    assert "the last 3 without progress" in outcome.reason


async def test_a_function_confirming_records_progressively_is_followed_to_the_end(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    """Lambda keeps going while the checkpoint advances; so does replayer (#11 point 4)."""
    repair = RepairFunction(ministack, CONFIRM_ONE="1")
    table.put(6)
    stream = seqs(table.stream_records())
    (failure,) = parse_message(table.invocation_record(0, 5))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=1)
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert seq_calls(repair) == [stream[i:] for i in range(6)]  # six invocations, each one record further


async def test_progress_is_still_bounded_by_a_total_invocation_cap(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, CONFIRM_ONE="1")
    table.put(6)
    stream = seqs(table.stream_records())
    (failure,) = parse_message(table.invocation_record(0, 5))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=1, max_invocations=3)
    assert (
        outcome.kind is OutcomeKind.RETRY
        and "after 3 invocations, the last 0 without progress" in outcome.reason
    )
    assert seq_calls(repair) == [stream, stream[1:], stream[2:]]


@pytest.mark.parametrize(
    "answer",
    ['{"batchItemFailures": "all of them"}', '{"batchItemFailures": [{"itemIdentifier": "12345"}]}'],
)  # fmt: skip
async def test_malformed_batch_item_failures_redrive_the_whole_batch(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str, answer: str
) -> None:
    repair = RepairFunction(ministack, ANSWER=answer)
    table.put(3)
    stream = seqs(table.stream_records())
    (failure,) = parse_message(table.invocation_record(0, 2))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=1)
    assert outcome.kind is OutcomeKind.RETRY and "batchItemFailures" in outcome.reason
    assert seq_calls(repair) == [stream, stream]


async def test_throttling_and_5xx_are_retried_by_botocore_not_twice(
    table: DynamoTable, repair: RepairFunction, ministack: Ministack, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FaultProxy(ministack.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", proxy.url)
    invoke = f"POST /2015-03-31/functions/{repair.name}/invocations"
    try:
        proxy.add(
            Rule(
                lambda r: r.operation == invoke,
                respond=aws_error("TooManyRequestsException", status=429),
                times=1,
            )
        )
        proxy.add(
            Rule(lambda r: r.operation == invoke, respond=aws_error("ServiceException", status=502), times=1)
        )
        table.put(2)
        (failure,) = parse_message(table.invocation_record(0, 1))
        outcome = await replay(failure, f"lambda:{repair.name}")
        assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
        assert proxy.count(invoke) == 3 and len(repair.calls()) == 1
        # Throttled on every attempt botocore makes: the range is left for retry, no second retry layer.
        proxy.clear()
        proxy.add(
            Rule(lambda r: r.operation == invoke, respond=aws_error("TooManyRequestsException", status=429))
        )
        async with Clients(max_attempts=2) as clients:
            outcome = await replay(failure, f"lambda:{repair.name}", clients=clients, invoke_retries=3)
        assert outcome.kind is OutcomeKind.RETRY and "TooManyRequestsException" in outcome.reason
        # max_attempts=2 counts every attempt: 2 requests, not 2 x 4 (the sink's own retries).
        assert proxy.count(invoke) == 2 and len(repair.calls()) == 1
    finally:
        proxy.close()


async def test_a_slow_function_is_waited_for_and_invoked_once(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, SLEEP="1")
    table.put(2)
    (failure,) = parse_message(table.invocation_record(0, 1))
    outcome = await replay(failure, f"lambda:{repair.name}")
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert len(repair.calls()) == 1


async def test_a_function_that_times_out_is_a_function_error(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, timeout=1, SLEEP="5")
    table.put(2)
    (failure,) = parse_message(table.invocation_record(0, 1))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=0)
    assert outcome.kind is OutcomeKind.RETRY and "function error" in outcome.reason
    assert len(repair.calls()) == 1


async def test_a_record_too_large_to_invoke_with_is_left_for_retry_uninvoked(
    table: DynamoTable, repair: RepairFunction
) -> None:
    table.put(1)
    table.put(1, start=1, payload="z" * 5000)
    (failure,) = parse_message(table.invocation_record(0, 1))
    outcome = await replay(failure, f"lambda:{repair.name}", max_payload_bytes=4000)
    assert outcome.kind is OutcomeKind.RETRY and "cannot be re-driven to a function" in outcome.reason
    assert repair.calls() == []


async def test_an_unknown_function_leaves_the_range_for_retry(
    table: DynamoTable, lambda_endpoint: str
) -> None:
    table.put(1)
    (failure,) = parse_message(table.invocation_record(0, 0))
    outcome = await replay(failure, "lambda:no-such-function")
    assert outcome.kind is OutcomeKind.RETRY and "ResourceNotFoundException" in outcome.reason


async def test_qualified_names_and_arns_reach_the_function(
    table: DynamoTable, repair: RepairFunction
) -> None:
    lam = repair.ms.client("lambda")
    version = lam.publish_version(FunctionName=repair.name)["Version"]
    lam.create_alias(FunctionName=repair.name, Name="live", FunctionVersion=version)
    table.put(2)
    (failure,) = parse_message(table.invocation_record(0, 1))
    for uri in (f"lambda:{repair.name}:live", f"lambda:{repair.arn}", f"lambda:{repair.arn}:{version}"):
        outcome = await replay(failure, uri)
        assert outcome.kind is OutcomeKind.REPLAYED, (uri, outcome.reason)
    assert len(repair.calls()) == 3


@pytest.mark.parametrize("archive", ["s3", "file"])
def test_archive_then_redrive_a_retry_never_rewrites_the_archive(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str, moto_endpoint: str, bucket: str,
    tmp_path: Path, archive: str,
) -> None:  # fmt: skip
    repair = RepairFunction(ministack, FAIL_FIRST="1")
    s3 = client("s3", moto_endpoint)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    to = f"s3://{bucket}/archive" if archive == "s3" else f"file:{tmp_path / 'archive'}"
    table.put(4)
    invocation = table.invocation_record(0, 3)
    (failure,) = parse_message(invocation)
    (tmp_path / "f.json").write_text(json.dumps(invocation))
    args = [
        "replay",
        str(tmp_path / "f.json"),
        "--to",
        to,
        "--to",
        f"lambda:{repair.name}",
        "--invoke-retries",
        "0",
        "--json",
    ]

    def archived_state() -> dict[str, Any]:
        if archive == "s3":
            versions = s3.list_object_versions(Bucket=bucket, Prefix="archive/")["Versions"]
            return {v["Key"]: v["VersionId"] for v in versions}
        folder = tmp_path / "archive" / range_path(failure)
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}

    first = run(*args)
    assert first.exit_code == 1
    assert json.loads(first.stdout)["ranges"][0]["outcome"] == "retry"
    before = archived_state()
    assert {name.rpartition("/")[2] for name in before} == {"records.jsonl.gz", "invocation.json"}
    second = run(*args)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["ranges"][0]["outcome"] == "replayed"
    assert archived_state() == before  # one version of each object: nothing was written again
    stream = seqs(table.stream_records())
    assert seq_calls(repair) == [stream, stream]


async def test_reinvocations_are_marked_in_the_client_context(
    table: DynamoTable, repair: RepairFunction, ministack: Ministack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ClientContext.custom.replayer names the range, the attempt, the original function and the re-drive.

    ministack (1.4.21 and 1.5.33) hands its Python workers ``context.client_context = None``,
    so the header is checked where Lambda receives it: on the wire, decoded as Lambda does.
    """
    proxy = FaultProxy(ministack.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", proxy.url)
    invoke = f"POST /2015-03-31/functions/{repair.name}/invocations"
    contexts: list[dict[str, Any]] = []

    def keep(request: Any) -> Any:
        encoded = request.headers["x-amz-client-context"]
        assert len(encoded) <= CLIENT_CONTEXT_LIMIT
        contexts.append(json.loads(base64.b64decode(encoded)))
        return request

    try:
        proxy.add(Rule(lambda r: r.operation == invoke, modify_request=keep))
        repair.configure(FAIL_FIRST="1")
        table.put(3)
        (failure,) = parse_message(table.invocation_record(0, 2))
        first = await replay(failure, f"lambda:{repair.name}", invoke_retries=2)
        second = await replay(failure, f"lambda:{repair.name}")
    finally:
        proxy.close()
    assert first.kind is OutcomeKind.REPLAYED and second.kind is OutcomeKind.REPLAYED
    marks = [c["custom"]["replayer"] for c in contexts]
    assert [m["attempt"] for m in marks] == [1, 2, 1]
    assert {m["range_id"] for m in marks} == {failure.range_id}
    assert {m["original_function"] for m in marks} == {failure.source_arn} != {None}
    assert marks[0]["redrive_id"] == marks[1]["redrive_id"] != marks[2]["redrive_id"]
    assert len(repair.calls()) == 3  # the event itself is unchanged: the same records each time


def test_the_client_context_stays_within_lambdas_limit() -> None:
    long = Failure(StreamKind.DYNAMODB, "arn", "s", "1", "2", source_arn="arn:" + "x" * 5000)
    encoded = client_context(long, 1, "r")
    assert len(encoded) <= CLIENT_CONTEXT_LIMIT
    assert json.loads(base64.b64decode(encoded))["custom"]["replayer"]["original_function"] is None


# --- what a repair function written with Powertools accepts (#11 point 5) ---------------------------


async def test_kinesis_records_carry_the_target_functions_role_and_pass_powertools(
    kinesis_stream: KinesisStream, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, VALIDATE="powertools")
    kinesis_stream.put(3)
    (failure,) = parse_message(kinesis_stream.invocation_record(0, 2))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=0)
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason  # the function validated the event
    (call,) = repair.calls()
    role = ministack.client("lambda").get_function_configuration(FunctionName=repair.name)["Role"]
    assert [r["invokeIdentityArn"] for r in call] == [role] * 3
    assert [r["kinesis"]["sequenceNumber"] for r in call] == [
        p["SequenceNumber"] for p in kinesis_stream.puts
    ]


async def test_an_override_wins_over_the_looked_up_role(
    kinesis_stream: KinesisStream, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, VALIDATE="powertools")
    kinesis_stream.put(1)
    (failure,) = parse_message(kinesis_stream.invocation_record(0, 0))
    override = "arn:aws:iam::123456789012:role/chosen"
    async with Clients() as clients:
        # As every command builds them from its settings: the override reaches readers and sinks.
        sink = sink_from_uri(
            f"lambda:{repair.name}", clients, SinkOptions(**FAST, invoke_identity_arn=override)
        )
        readers = Readers(clients, invoke_identity_arn=override)
        replayer = Replayer(clients, [sink], allow=ANY_STREAM, readers=readers)
        outcome = await replayer.replay(failure)
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert [r["invokeIdentityArn"] for r in repair.received()] == [override]


async def test_records_read_back_from_an_archive_get_the_target_functions_role(
    kinesis_stream: KinesisStream, ministack: Ministack, lambda_endpoint: str
) -> None:
    """Archived Kinesis records name the failed function's role; re-driven, Lambda would name the target's."""
    repair = RepairFunction(ministack, VALIDATE="powertools")
    kinesis_stream.put(2)
    (failure,) = parse_message(kinesis_stream.invocation_record(0, 1))
    failed_role = "arn:aws:iam::123456789012:role/the-function-that-failed"
    async with Clients() as clients:
        archived = await Readers(clients, invoke_identity_arn=failed_role).for_failure(failure).read(failure)
        assert [json.loads(r.json)["invokeIdentityArn"] for r in archived.records] == [failed_role] * 2
        sink = sink_from_uri(f"lambda:{repair.name}", clients, SinkOptions(**FAST))
        await sink.deliver(failure, archived)
    role = ministack.client("lambda").get_function_configuration(FunctionName=repair.name)["Role"]
    assert role != failed_role
    assert [r["invokeIdentityArn"] for r in repair.received()] == [role, role]


async def test_dynamodb_records_pass_powertools(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str
) -> None:
    repair = RepairFunction(ministack, VALIDATE="powertools")
    table.put(2)
    (failure,) = parse_message(table.invocation_record(0, 1))
    outcome = await replay(failure, f"lambda:{repair.name}", invoke_retries=0)
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert seq_calls(repair) == [seqs(table.stream_records())]


def test_a_failing_functions_own_error_is_on_its_row_within_100_columns(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    repair = RepairFunction(ministack, FAIL_FIRST="99")
    table.put(2)
    (tmp_path / "failure.json").write_text(json.dumps(table.invocation_record(0, 1)))
    result = runner.invoke(
        app,
        ["replay", str(tmp_path / "failure.json"), "--to", f"s3://{bucket}/a", "--to", f"lambda:{repair.name}",
         "--invoke-retries", "0"],
        env={"COLUMNS": "100"},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("retry")]
    # why first (the function's error type, then its message as far as 100 columns go), where it went after
    assert len(row) <= 100 and f"lambda:{repair.name}: Runtime.Handler" in row, row
    whole = runner.invoke(app, ["replay", str(tmp_path / "failure.json"), "--to", f"lambda:{repair.name}",
                                "--invoke-retries", "0", "--json"])  # fmt: skip
    (described,) = json.loads(whole.stdout)["ranges"]
    assert re.search(
        r"Runtime.HandlerError: told to fail invocation [0-9]+ \(function error", described["reason"]
    )
