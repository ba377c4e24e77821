"""model.py: what a range lost is counted from what the read found, never from a message alone."""

from __future__ import annotations

import pytest

from replayer.model import (
    Failure,
    Gap,
    Outcome,
    OutcomeKind,
    RecordPage,
    StreamKind,
    StreamRecord,
    records_lost,
)

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


def failure(batch_size: int | None) -> Failure:
    return Failure(StreamKind.KINESIS, ARN, "shardId-000000000000", "100", "200", batch_size=batch_size)


@pytest.mark.parametrize(
    ("batch", "recovered", "gaps", "expected"),
    [
        (10_000, 3, (), (0, False)),  # a forged batchSize with nothing missing moves nothing
        (10, 3, (Gap("100", "150", "trimmed"),), (7, False)),  # batchSize - recovered, within the gap
        (10_000, 0, (Gap("100", "104", "trimmed"),), (5, False)),  # never more than the gap's span holds
        (
            2,
            2,
            (Gap("100", "101", "trimmed"), Gap("150", "151", "trimmed")),
            (2, True),
        ),  # batch disagrees: one a gap
        (None, 0, (Gap("100", "200", "trimmed"),), (1, True)),  # unknown size: at least one per gap
    ],
)
def test_records_lost_is_bounded_by_the_read(
    batch: int | None, recovered: int, gaps: tuple[Gap, ...], expected: tuple[int, bool]
) -> None:
    assert records_lost(failure(batch), recovered, gaps) == expected
    kind = OutcomeKind.PARTIAL if gaps else OutcomeKind.REPLAYED
    assert Outcome(kind, failure(batch), recovered=recovered, gaps=gaps).lost == expected


def test_a_record_page_is_the_sequence_of_its_records() -> None:
    records = [StreamRecord(str(100 + i), b'{"n":%d}' % i) for i in range(5)]
    page = RecordPage()
    for r in records:
        page.append(r.sequence_number, r.json)
    assert len(page) == 5 and list(page) == records and page == records and page == tuple(records)
    assert page[0] == records[0] and page[-1] == records[-1]
    assert page[1:3] == records[1:3] and isinstance(page[1:3], RecordPage)
    assert page != records[:4] and page != [*records[:4], StreamRecord("104", b"{}")]
    with pytest.raises(IndexError):
        page[5]
    with pytest.raises(ValueError, match="one JSON per sequence number"):
        RecordPage(["1", "2"], [b"{}"])


def test_a_record_page_of_json_lines_is_the_same_page_split_only_when_asked() -> None:
    records = [StreamRecord(str(100 + i), b'{"n":%d,"s":"a\\nb"}' % i) for i in range(4)]
    made = RecordPage([r.sequence_number for r in records], [r.json for r in records])
    lines = made.lines()
    assert lines == b"".join(r.json + b"\n" for r in records)  # JSON Lines, each newline-terminated
    ends, end = [], 0
    for r in records:
        end += len(r.json) + 1
        ends.append(end)
    page = RecordPage.of_lines([r.sequence_number for r in records], lines, ends)
    assert page.lines() is lines  # packed as they are: not split, not joined again
    assert len(page) == 4 and page == made and list(page) == records and page[2] == records[2]
    page.append("104", b"{}")  # split into records once one is needed
    assert page.lines() == lines + b"{}\n" and page[-1] == StreamRecord("104", b"{}")
    assert RecordPage().lines() == b""
    with pytest.raises(ValueError, match="one JSON line per sequence number"):
        RecordPage.of_lines(["1"], b"{}\n{}\n", [3, 6])
    with pytest.raises(ValueError, match="one JSON line per sequence number"):
        RecordPage.of_lines(["1", "2"], b"{}\n{}\n", [3, 5])
