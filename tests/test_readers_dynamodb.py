"""The DynamoDB Streams reader against moto over HTTP, with a fault proxy for what moto cannot do."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from replayer.aws import Clients
from replayer.model import Failure, StreamKind, StreamRecord
from replayer.parse import parse_message
from replayer.readers import (
    NO_SUCH_STREAM,
    DynamoDBReader,
    RangeCollector,
    RangeRecords,
    ReadResult,
    pages_of,
)
from tests.support.aws import DynamoTable
from tests.support.faultproxy import FaultProxy, Request, Rule, aws_error, op


def failure_of(table: DynamoTable, first: int, last: int, **overrides: Any) -> Failure:
    (failure,) = parse_message(table.invocation_record(first, last, **overrides))
    return failure


async def read(failure: Failure, **settings: Any) -> ReadResult:
    async with Clients() as clients:
        return await DynamoDBReader(clients, **settings).read(failure)


def expected_event_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """What Lambda's event carries for a GetRecords record that boto3 parsed."""

    def wire(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: wire(v) for k, v in value.items()}
        if isinstance(value, list):
            return [wire(v) for v in value]
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        return value

    out = wire(record)
    created = record["dynamodb"]["ApproximateCreationDateTime"].timestamp()  # epoch seconds, as on the wire
    out["dynamodb"]["ApproximateCreationDateTime"] = int(created) if created.is_integer() else created
    out["eventSourceARN"] = stream_arn
    return out


def decoded(result: ReadResult) -> list[dict[str, Any]]:
    return [json.loads(r.json) for r in result.records]


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


async def test_reads_exactly_the_range_in_the_lambda_event_shape(table: DynamoTable) -> None:
    table.put(10)
    stream = table.stream_records()
    result = await read(failure_of(table, 3, 7))
    assert result.complete and not result.gaps and not result.notes
    assert decoded(result) == [expected_event_record(r, table.stream_arn) for r in stream[3:8]]
    first = decoded(result)[0]
    assert isinstance(first["dynamodb"]["ApproximateCreationDateTime"], int | float)
    assert base64.b64decode(first["dynamodb"]["NewImage"]["blob"]["B"]) == b"bin-3"
    assert first["eventSourceARN"] == table.stream_arn
    assert list(first)[:6] == ["eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb"]


async def test_pages_until_the_end_sequence(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(25)
    stream = table.stream_records()
    proxy.clear()
    result = await read(failure_of(table, 2, 21), page_limit=4)
    assert seqs(decoded(result)) == seqs(stream[2:22])
    assert proxy.count("GetRecords") == 5  # 20 records, 4 a page, stops at the end record


async def test_keeps_going_through_empty_pages(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(6)
    stream = table.stream_records()
    empty = proxy.add(
        Rule(
            op("GetRecords"),
            rewrite=lambda req, body: {"Records": [], "NextShardIterator": req.json()["ShardIterator"]},
            times=4,
        )
    )
    result = await read(failure_of(table, 1, 4))
    assert empty.hits == 4
    assert result.complete and seqs(decoded(result)) == seqs(stream[1:5])


async def test_bounded_empty_pages_are_retried_not_lost(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(4)
    proxy.add(
        Rule(
            op("GetRecords"),
            rewrite=lambda req, body: {"Records": [], "NextShardIterator": req.json()["ShardIterator"]},
        )
    )
    result = await read(failure_of(table, 0, 3), max_empty_pages=5)
    assert not result.complete
    assert not result.gaps
    assert any("5 consecutive empty pages" in n for n in result.notes)
    assert proxy.count("GetRecords") == 5


async def test_expired_iterator_is_reacquired_after_the_last_record(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    table.put(12)
    stream = table.stream_records()
    calls: list[dict[str, Any]] = []
    proxy.add(Rule(op("GetShardIterator"), modify_request=lambda r: calls.append(r.json()) or r))
    # the second GetRecords finds its iterator expired
    pages = {"n": 0}

    def second_call(request: Request) -> bool:
        if request.operation != "GetRecords":
            return False
        pages["n"] += 1
        return pages["n"] == 2

    proxy.add(Rule(second_call, respond=aws_error("ExpiredIteratorException", "Iterator expired")))
    result = await read(failure_of(table, 1, 10), page_limit=3)
    assert seqs(decoded(result)) == seqs(stream[1:11])  # nothing twice, nothing skipped
    assert [c["ShardIteratorType"] for c in calls] == ["AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"]
    assert calls[1]["SequenceNumber"] == stream[3]["dynamodb"]["SequenceNumber"]


async def test_throttling_is_backed_off_by_botocore(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(3)
    throttle = proxy.add(
        Rule(op("GetRecords"), respond=aws_error("LimitExceededException", "slow down"), times=2)
    )
    result = await read(failure_of(table, 0, 2))
    assert throttle.hits == 2
    assert result.complete and len(result.records) == 3


def trimmed_until(proxy: FaultProxy, first_kept: str) -> None:
    """Make the shard look trimmed: everything before `first_kept` is past retention."""

    def asks_for_trimmed(request: Request) -> bool:
        if request.operation != "GetShardIterator":
            return False
        body = request.json()
        return "SequenceNumber" in body and int(body["SequenceNumber"]) < int(first_kept)

    proxy.add(Rule(asks_for_trimmed, respond=aws_error("TrimmedDataAccessException", "trimmed")))
    proxy.add(
        Rule(
            lambda r: r.operation == "GetShardIterator" and r.json()["ShardIteratorType"] == "TRIM_HORIZON",
            modify_request=lambda r: r.with_json(
                ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=first_kept
            ),
        )
    )


async def test_trimmed_start_recovers_the_rest_and_reports_the_exact_gap(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    table.put(10)
    stream = table.stream_records()
    trimmed_until(proxy, stream[4]["dynamodb"]["SequenceNumber"])
    failure = failure_of(table, 1, 7)
    result = await read(failure)
    assert seqs(decoded(result)) == seqs(stream[4:8])
    (gap,) = result.gaps
    assert gap.first == failure.start_sequence
    assert int(gap.last) == int(stream[4]["dynamodb"]["SequenceNumber"]) - 1
    assert "trimmed" in gap.reason


async def test_trimmed_while_reading(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(12)
    stream = table.stream_records()
    state = {"pages": 0}

    def second_page(request: Request) -> bool:
        if request.operation == "GetRecords":
            state["pages"] += 1
            return state["pages"] == 2
        return False

    proxy.add(Rule(second_page, respond=aws_error("TrimmedDataAccessException", "trimmed")))
    trimmed_until(proxy, stream[7]["dynamodb"]["SequenceNumber"])
    # the first iterator is handed out before the trim; only later ones see it
    proxy.rules.insert(0, Rule(op("GetShardIterator"), times=1))
    result = await read(failure_of(table, 1, 10), page_limit=3)
    assert seqs(decoded(result)) == seqs(stream[1:4]) + seqs(stream[7:11])
    (gap,) = result.gaps
    assert int(gap.first) == int(stream[3]["dynamodb"]["SequenceNumber"]) + 1
    assert int(gap.last) == int(stream[7]["dynamodb"]["SequenceNumber"]) - 1


async def test_fully_trimmed_range_is_all_gap(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(10)
    stream = table.stream_records()
    trimmed_until(proxy, stream[8]["dynamodb"]["SequenceNumber"])
    failure = failure_of(table, 2, 5)
    result = await read(failure)
    assert result.records == ()
    assert [(g.first, g.last) for g in result.gaps] == [(failure.start_sequence, failure.end_sequence)]


async def test_closed_shard_read_to_its_end(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(5)
    stream = table.stream_records()

    def close_when_drained(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        if not body["Records"]:
            body.pop("NextShardIterator", None)
        return body

    proxy.add(Rule(op("GetRecords"), rewrite=close_when_drained))
    beyond = str(int(stream[-1]["dynamodb"]["SequenceNumber"]) + 50)
    failure = failure_of(table, 2, 4, endSequenceNumber=beyond)
    result = await read(failure)
    assert seqs(decoded(result)) == seqs(stream[2:5])
    (gap,) = result.gaps
    assert int(gap.first) == int(stream[4]["dynamodb"]["SequenceNumber"]) + 1 and gap.last == beyond
    assert "shard ended" in gap.reason


async def test_batch_size_mismatch_is_reported(table: DynamoTable) -> None:
    table.put(6)
    result = await read(failure_of(table, 0, 4, batchSize=3))
    assert len(result.records) == 5
    assert any("batchSize says 3" in n for n in result.notes)


async def test_unknown_stream_is_refused_as_no_such_stream_not_lost(table: DynamoTable) -> None:
    table.put(2)
    record = table.invocation_record(0, 1)
    record["DDBStreamBatchInfo"]["streamArn"] = table.stream_arn.replace(table.name, "no-such-table")
    (failure,) = parse_message(record)
    result = await read(failure)
    assert result.records == () and result.gaps == ()
    assert result.refused == f"{NO_SUCH_STREAM}: {failure.stream_arn}"


async def test_a_missing_shard_of_a_stream_that_exists_is_lost_with_reason(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    """DynamoDB Streams drop a shard 24 hours after it closes (moto cannot: the proxy answers)."""
    table.put(2)
    proxy.add(Rule(op("GetShardIterator"), respond=aws_error("ResourceNotFoundException", "shard gone")))
    failure = failure_of(table, 0, 1)
    result = await read(failure)
    assert result.records == () and result.refused is None
    (gap,) = result.gaps
    assert (gap.first, gap.last) == (failure.start_sequence, failure.end_sequence)
    assert "shard not found" in gap.reason


async def test_one_reader_per_shard_at_a_time(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(8)
    proxy.add(Rule(op("GetRecords"), delay=0.05))
    a, b = failure_of(table, 0, 3), failure_of(table, 4, 7)
    async with Clients() as clients:
        reader = DynamoDBReader(clients, page_limit=2)
        results = await asyncio.gather(reader.read(a), reader.read(b))
    assert [len(r.records) for r in results] == [4, 4]
    calls = [s for s in proxy.seen if s in ("GetShardIterator", "GetRecords")]
    # one range's reads finish before the other's start; the second goes on from the first's iterator
    assert calls == ["GetShardIterator"] + ["GetRecords"] * 4


async def test_the_next_range_goes_on_from_where_the_previous_one_ended(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    table.put(9)
    stream = table.stream_records()
    proxy.clear()
    async with Clients() as clients:
        reader = DynamoDBReader(clients, page_limit=3)
        first = await reader.read(failure_of(table, 0, 2))
        second = await reader.read(failure_of(table, 3, 5))
        third = await reader.read(failure_of(table, 6, 8))
    assert [seqs(decoded(r)) for r in (first, second, third)] == [seqs(stream[i : i + 3]) for i in (0, 3, 6)]
    assert not any(r.gaps or r.notes for r in (first, second, third))
    assert [s for s in proxy.seen if s in ("GetShardIterator", "GetRecords")] == ["GetShardIterator"] + [
        "GetRecords"
    ] * 3


async def test_a_hand_over_its_decoded_page_contradicts_is_not_gone_on_from(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    """The next range goes on from where the previous one ended as soon as the raw answer says its
    page ends at the range's end; were the decoded page to say otherwise, it is not gone on from."""
    table.put(6)
    stream = table.stream_records()
    end_of_first = stream[2]["dynamodb"]["SequenceNumber"]

    def misleading(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        # A string-valued SequenceNumber key after the real ones (no GetRecords answer has one).
        body["Records"][-1]["zz"] = {"SequenceNumber": end_of_first}
        return body

    proxy.clear()
    proxy.add(Rule(op("GetRecords"), rewrite=misleading, times=1))
    async with Clients() as clients:
        reader = DynamoDBReader(clients, page_limit=4)
        first = await reader.read(failure_of(table, 0, 2))  # its page also holds record 3
        second = await reader.read(failure_of(table, 3, 5))
    assert seqs(decoded(first)) == seqs(stream[0:3]) and not first.gaps
    assert seqs(decoded(second)) == seqs(stream[3:6]) and not second.gaps and second.complete
    calls = [s for s in proxy.seen if s in ("GetShardIterator", "GetRecords")]
    assert calls == ["GetShardIterator", "GetRecords", "GetRecords", "GetShardIterator", "GetRecords"]


async def test_a_range_far_after_the_previous_one_gets_its_own_iterator(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    table.put(12)
    stream = table.stream_records()
    proxy.clear()
    async with Clients() as clients:
        reader = DynamoDBReader(clients, page_limit=2)
        await reader.read(failure_of(table, 0, 1))
        far = await reader.read(failure_of(table, 8, 11))
    assert seqs(decoded(far)) == seqs(stream[8:12]) and not far.gaps and not far.notes
    # the page after the first range holds nothing of the far one: its own iterator, then its pages
    calls = [s for s in proxy.seen if s in ("GetShardIterator", "GetRecords")]
    assert calls == [
        "GetShardIterator",
        "GetRecords",
        "GetRecords",
        "GetShardIterator",
        "GetRecords",
        "GetRecords",
    ]


async def test_a_page_past_the_range_end_is_not_gone_on_from(table: DynamoTable, proxy: FaultProxy) -> None:
    table.put(6)
    stream = table.stream_records()
    proxy.clear()
    async with Clients() as clients:
        reader = DynamoDBReader(clients, page_limit=4)
        await reader.read(failure_of(table, 0, 2))  # its page also holds record 3
        second = await reader.read(failure_of(table, 3, 5))
    assert seqs(decoded(second)) == seqs(stream[3:6]) and not second.gaps
    assert proxy.count("GetShardIterator") == 2


@pytest.mark.parametrize("bad", ["ValidationException", "AccessDeniedException"])
async def test_other_errors_surface_for_a_retry(table: DynamoTable, proxy: FaultProxy, bad: str) -> None:
    table.put(2)
    proxy.add(Rule(op("GetShardIterator"), respond=aws_error(bad)))
    with pytest.raises(Exception, match=bad):
        await read(failure_of(table, 0, 1))


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 1001, 2500])
def test_range_records_hold_full_pages_compressed_and_give_back_the_same_records(count: int) -> None:
    records = tuple(
        StreamRecord(str(10**20 + i), b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 37))) for i in range(count)
    )
    held = RangeRecords(records)
    assert len(held) == count
    assert held == records and tuple(held) == records
    assert [r for page in pages_of(held) for r in page] == list(records)
    assert all(len(page) <= 1000 for page in pages_of(held))
    for i in (0, 1, 999, 1000, 1001, count - 1, -1, -count):
        if -count <= i < count:
            assert held[i] == records[i]
    assert held[1:1500:7] == records[1:1500:7]
    with pytest.raises(IndexError):
        held[count]


@st.composite
def shard_pages(draw: st.DrawFn) -> list[list[int]]:
    """Pages of sequence numbers around a range 100..112: mostly rising, sometimes not."""
    seq = draw(st.integers(97, 100))
    steps = draw(st.lists(st.sampled_from([1] * 12 + [2, 0, -3]), max_size=30))
    numbers = [seq := seq + step for step in steps]
    cuts = sorted(draw(st.lists(st.integers(0, len(numbers)), max_size=5)))
    return [numbers[a:b] for a, b in zip([0, *cuts], [*cuts, len(numbers)], strict=True)]


@settings(max_examples=400, deadline=None)
@example(pages=[list(range(100, 116))], ceiling=40, before="")  # one page past the range's end
@example(pages=[list(range(100, 106)), list(range(106, 116))], ceiling=40, before="")
@example(pages=[list(range(100, 116))], ceiling=5, before="")  # over its ceiling
@example(pages=[list(range(101, 116))], ceiling=40, before="")  # its start gone
@example(pages=[list(range(100, 105)), list(range(104, 116))], ceiling=40, before="expect_again")
@given(
    pages=shard_pages(),
    ceiling=st.integers(1, 40),
    before=st.sampled_from(["", "expect_again", "lost_from_here"]),
)
def test_a_page_is_taken_as_record_by_record_whatever_it_holds(
    pages: list[list[int]], ceiling: int, before: str
) -> None:
    def books_after(by_page: bool) -> tuple[Any, ...]:
        arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2025-01-01T00:00:00.000"
        failure = Failure(StreamKind.DYNAMODB, arn, "shardId-1", "100", "112")
        books = RangeCollector(failure, ceiling=ceiling)
        for n, page in enumerate(pages):
            if books.done:
                break
            if n == 1 and before == "expect_again" and books.last is not None:
                books.expect_again(str(books.last))
            if n == 1 and before == "lost_from_here":
                books.lost_from_here("trimmed")
            seqs = [str(s) for s in page]
            if by_page:
                books.add_page(page, seqs, lambda records: [b'{"n":%d}' % r for r in records])
            else:
                for at, seq in enumerate(seqs):
                    if books.add(seq, b'{"n":%s}' % seq.encode()):
                        rest = seqs[at + 1 :]  # what follows the range's end is still looked at
                        books.after_end(rest, lambda i, rest=rest: b'{"n":%s}' % rest[i].encode())
                        break
        return (
            tuple(books.records),
            books.result(),
            books.last,
            books.done,
            books.offered,
            books.before_start,
        )

    assert books_after(by_page=True) == books_after(by_page=False)


# ---------------------------------------------------------------- #21.8: a misbehaving endpoint


def page_rule(change: Any) -> Rule:
    """The proxy rewrites the first GetRecords answer: `change(records)` -> records."""
    return Rule(
        op("GetRecords"), rewrite=lambda _r, body: {**body, "Records": change(body["Records"])}, times=1
    )


@pytest.mark.parametrize(
    ("last", "order", "missing"),
    [
        (4, [0, 3, 2, 1, 4], [1, 2]),  # two records after a later one
        (2, [0, 1, 3, 2, 4], [2]),  # the range's last record after the one that ends it
    ],
)
async def test_a_page_out_of_order_reports_each_record_it_could_not_take(
    last: int, order: list[int], missing: list[int], table: DynamoTable, proxy: FaultProxy
) -> None:
    table.put(5)
    stream = table.stream_records()
    proxy.add(page_rule(lambda records: [records[i] for i in order]))
    result = await read(failure_of(table, 0, last))
    sequences = [stream[i]["dynamodb"]["SequenceNumber"] for i in missing]
    assert [(g.first, g.last) for g in result.gaps] == [(s, s) for s in sequences]
    assert all("out of order" in g.reason for g in result.gaps)
    assert len(result.records) + len(missing) == last + 1  # every record is taken or reported


async def test_a_sequence_number_repeated_with_other_content_is_a_conflict_not_a_silent_pick(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Any
) -> None:
    from replayer.allow import AllowList
    from replayer.core import Replayer
    from replayer.model import OutcomeKind
    from replayer.sinks import FileSink

    table.put(3)

    def forged_twin(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        twin = json.loads(json.dumps(records[1]))
        twin["dynamodb"]["NewImage"] = {"pk": {"S": "forged"}}
        return [records[0], records[1], twin, records[2]]

    proxy.add(page_rule(forged_twin))
    async with Clients() as clients:
        replayer = Replayer(clients, [FileSink(tmp_path)], allow=AllowList.of(["*"]), find_mappings=False)
        outcome = await replayer.replay(failure_of(table, 0, 2))
    assert outcome.kind is OutcomeKind.CONFLICT and "two different records" in outcome.reason
    assert not list(tmp_path.iterdir())  # nothing delivered


async def test_a_page_repeating_a_record_as_it_was_loses_nothing(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    table.put(3)
    proxy.add(page_rule(lambda records: [records[0], records[1], records[0], records[1], records[2]]))
    result = await read(failure_of(table, 0, 2))
    assert len(result.records) == 3 and not result.gaps and result.refused is None and result.conflict is None


async def test_a_record_larger_than_dynamodb_streams_allows_on_a_page_is_refused_unread(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    from replayer.aws import MAX_ANSWER_BYTES
    from replayer.readers import TOO_LARGE

    table.put(2)
    cap = MAX_ANSWER_BYTES["DynamoDBStreams_20120810.GetRecords"]

    def bloated(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[0]["dynamodb"]["NewImage"]["padding"] = {"S": "x" * (cap + 1)}
        return records

    rule = proxy.add(
        Rule(op("GetRecords"), rewrite=lambda _r, body: {**body, "Records": bloated(body["Records"])})
    )
    result = await read(failure_of(table, 0, 1))
    assert rule.hits == 10  # asked again with half as many records, 1000 down to 1: one alone is too large
    assert result.refused is not None and result.refused.startswith(TOO_LARGE)
    assert f"more than {cap} bytes" in result.refused and not result.records


async def test_a_page_of_records_larger_than_dynamodb_streams_allows_is_asked_again_smaller(
    table: DynamoTable, proxy: FaultProxy
) -> None:
    """moto does not split pages at 1 MB as DynamoDB Streams does: 20 records of 300 KB come as one
    6 MB answer, past the cap; asked again with fewer records a call, the range is read whole."""
    table.put(20, payload="p" * 300_000)
    limits: list[int] = []

    def asked(request: Request) -> bool:
        if request.operation == "GetRecords":
            limits.append(json.loads(request.body)["Limit"])
        return False  # only watching

    proxy.add(Rule(asked))
    result = await read(failure_of(table, 0, 19))
    assert result.refused is None and not result.gaps and len(result.records) == 20
    assert limits[0] == 1000 and min(limits) < 20  # asked again with fewer


def test_range_records_find_a_record_by_its_sequence_number_in_any_page() -> None:
    records = RangeRecords([StreamRecord(str(1000 + 2 * i), b'{"n":%d}' % i) for i in range(2500)])
    assert records.find("1000") == b'{"n":0}'
    assert records.find("02998") == b'{"n":999}'  # compared as numbers, in the first sealed page
    assert records.find(str(1000 + 2 * 2499)) == b'{"n":2499}'  # the open page
    assert records.find("1001") is None and records.find("999") is None and records.find("9999") is None
