"""How a run tells people (one line per range, a progress bar) and programs (json, jsonl) what happened.

Every command renders through here: one table style, one summary document, one exit rule.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from replayer.model import Outcome, OutcomeKind, parse_stream_arn

__all__ = [
    "CANCELLED",
    "STOPPED_BY_BREAKER",
    "STOP_CODES",
    "RANGE_ID_SHOWN",
    "Report",
    "exit_code",
    "progress",
    "render",
    "short_shard",
    "short_stream",
    "summary",
    "table_width",
    "write_json",
]

_STYLE = {
    OutcomeKind.REPLAYED: "green",
    OutcomeKind.PARTIAL: "yellow",
    OutcomeKind.EXPIRED: "red",
    OutcomeKind.REJECTED: "red",
    OutcomeKind.RETRY: "magenta",
    OutcomeKind.CONFLICT: "red",
    OutcomeKind.PLANNED: "cyan",
    OutcomeKind.SKIPPED: "cyan",
}
_FINE = {OutcomeKind.REPLAYED, OutcomeKind.PLANNED, OutcomeKind.SKIPPED}
# A run that stopped starting work before it was through: the breaker tripped (3), or it was
# cancelled from elsewhere (`replayer runs cancel`, 4). What was not sent is left for a rerun.
STOPPED_BY_BREAKER, CANCELLED = "breaker", "cancelled"
STOP_CODES = {STOPPED_BY_BREAKER: 3, CANCELLED: 4}
_MESSAGE_COUNTS = ("received", "deleted", "retried", "quarantined", "left", "released")


@dataclass(frozen=True, slots=True)
class Report:
    """What one command did: an outcome per range, and what it could not do."""

    outcomes: Sequence[Outcome]
    messages: Mapping[str, int] | None = None  # drain: what became of the queue's messages
    interrupted: str | None = None  # the signal that stopped the run, if one did
    notes: Sequence[str] = field(default=())  # lines for people after the table
    stopped: str | None = None  # STOPPED_BY_BREAKER or CANCELLED: the run stopped starting work
    stop_reason: str | None = None  # why, with the function's last error
    run: str | None = None  # the run's name in the archive's ledger

    @property
    def exit_code(self) -> int:
        if self.interrupted == "SIGTERM":
            return 143
        if self.interrupted:
            return 130
        if self.stopped:
            return STOP_CODES.get(self.stopped, 3)
        code = exit_code(self.outcomes)
        if self.messages and any(self.messages.get(k, 0) for k in ("retried", "left", "released")):
            code = max(code, 1)
        return code


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when every range was replayed (or planned, or skipped with a reason), 1 otherwise."""
    return 0 if all(o.kind in _FINE for o in outcomes) else 1


def _totals(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts = Counter(o.kind.value for o in outcomes)
    return {
        "ranges": len(outcomes),
        **{kind.value: counts.get(kind.value, 0) for kind in OutcomeKind},
        "records_recovered": sum(o.recovered for o in outcomes),
        "ranges_with_loss": sum(1 for o in outcomes if o.gaps),
    }


def summary(outcomes: Sequence[Outcome] | Report) -> dict[str, Any]:
    """The JSON document of a run: every range, the totals, the exit code."""
    report = outcomes if isinstance(outcomes, Report) else Report(outcomes)
    document: dict[str, Any] = {
        "ranges": [o.describe() for o in report.outcomes],
        "totals": _totals(report.outcomes),
    }
    if report.messages is not None:
        document["messages"] = {k: report.messages.get(k, 0) for k in _MESSAGE_COUNTS}
    if report.interrupted:
        document["interrupted"] = report.interrupted
    if report.run:
        document["run"] = report.run
    if report.stopped:
        document["stopped"] = {"by": report.stopped, "reason": report.stop_reason}
    document["exit_code"] = report.exit_code
    return document


def write_json(outcomes: Sequence[Outcome] | Report, out: IO[str]) -> None:
    json.dump(summary(outcomes), out, indent=2)
    out.write("\n")


RANGE_ID_SHOWN = 8  # characters of a range id in a table (redrive --range-id takes them, or the whole id)
_WIDTH = 100  # a line per range fits this many columns when not on a terminal (COLUMNS changes it)
_MIN_WHY = 24  # the last column's least width: fixed columns give way to it
_LONG_NUMBER = re.compile(r"\d{13,}")  # sequence numbers (21 to 56 digits): their last digits tell them apart
_ALREADY = "already archived"  # the archive sink's note when a rerun found the range there


def _already(o: Outcome) -> bool:
    return o.kind is OutcomeKind.REPLAYED and any(_ALREADY in note for note in o.notes)


def _where(o: Outcome) -> str:
    """Where a replayed range went; for any other outcome why first (the part a narrow line keeps),
    then where its report or records went."""
    went = o.report_uri or ", ".join(o.delivered_to)
    if o.kind is OutcomeKind.REPLAYED:
        went = ", ".join(_sink_of(location, o) for location in o.delivered_to) or went
        where = f"{_ALREADY} in {went}" if _already(o) else went or o.reason
    else:
        where = o.reason or went
        if o.reason and went:
            where = f"{o.reason} ({'report: ' if o.report_uri else 'delivered to '}{went})"
    missing = ", ".join(f"{g.first}..{g.last}" for g in o.gaps)
    return (where or "-") + (f"; missing {missing}" if missing else "")


def _sink_of(location: str, o: Outcome) -> str:
    """The sink a range went to (s3://BUCKET/PREFIX, file:DIR), not its folder there (--json has it)."""
    from replayer.archive.layout import LOSS_REPORT, MANIFEST, RECORDS, range_path  # loaded when printed

    if o.failure is None or "/" not in location:
        return location
    parts = location.split("/")
    if parts[-1] in (RECORDS, MANIFEST, LOSS_REPORT):
        parts.pop()
    folder = range_path(o.failure).count("/") + 1  # its segments (escaped, never split)
    return "/".join(parts[:-folder]) if len(parts) > folder else location


def short_stream(arn: str) -> str:
    """A stream's name for a table cell: the table (DynamoDB) or stream (Kinesis) name."""
    parsed = parse_stream_arn(arn)
    return parsed.name if parsed is not None else arn


def short_shard(shard_id: str) -> str:
    """A shard id for a table cell: Kinesis's number (shardId-000000000003: 3), DynamoDB's last part."""
    rest = shard_id.removeprefix("shardId-")
    if rest.isdigit():
        return str(int(rest))
    return rest.rsplit("-", 1)[-1]


def _short_number(number: str) -> str:
    return number if len(number) <= 7 else "…" + number[-5:]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _cell(text: str, o: Outcome) -> str:
    """One line, whatever the reason holds (an error body's HTML, a traceback): whitespace collapsed,
    the stream's ARN by its name, sequence numbers by their last digits (--json has them whole)."""
    text = " ".join(text.split())
    if o.failure is not None:
        text = text.replace(o.failure.stream_arn, short_stream(o.failure.stream_arn))
    elif "/" in (where := text.split(": ", 1))[0]:  # an input that did not parse: its file's name and line
        text = ": ".join([os.path.basename(where[0]), *where[1:]])
    return _LONG_NUMBER.sub(lambda m: _short_number(m[0]), text)


def _row(o: Outcome) -> list[str]:
    f = o.failure
    where = _cell(_where(o), o)
    if f is None:
        return [o.kind.value, "-", str(o.recovered), "-", "-", where]
    return [
        o.kind.value,
        f.range_id[:RANGE_ID_SHOWN],
        str(o.recovered),
        short_stream(f.stream_arn),
        short_shard(f.shard_id),
        where,
    ]


# Sequence numbers (21 to 56 digits) are in --json: a line per range keeps room for where / why.
_HEADER = ["outcome", "range", "records", "stream", "shard", "where / why"]
_CAPS = [9, RANGE_ID_SHOWN, 9, 12, 10]  # the most each fixed column takes; longer is cut (…)


def _lines(outcomes: Sequence[Outcome], width: int) -> Iterator[tuple[Text, bool]]:
    """One line per range, at most `width` columns; (line, whether its last cell was cut)."""
    rows = [_row(o) for o in outcomes]
    widths = [min(cap, max(len(r[i]) for r in [_HEADER, *rows])) for i, cap in enumerate(_CAPS)]
    while sum(widths) + 2 * len(widths) + _MIN_WHY > width and widths[3] > 6:
        widths[3] -= 1  # the stream's name gives way first
    why = max(_MIN_WHY, width - sum(widths) - 2 * len(widths))
    aligned = [str.ljust, str.ljust, str.rjust, str.ljust, str.ljust]
    yield Text("  ".join(align(h, w) for h, w, align in zip(_HEADER, widths, aligned, strict=False)) + "  "
               + _HEADER[-1], "bold"), False  # fmt: skip
    for o, row in zip(outcomes, rows, strict=True):
        cells = [align(_cut(c, w), w) for c, w, align in zip(row, widths, aligned, strict=False)]
        line = Text(cells[0], _STYLE[o.kind])
        line.append("  " + "  ".join(cells[1:]) + "  " + _cut(row[-1], why))
        yield line, len(row[-1]) > why


def table_width(console: Console) -> int:
    """The columns a table may use: the terminal's, else COLUMNS, else 100."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 60 else _WIDTH


_DELIVERED = (OutcomeKind.REPLAYED, OutcomeKind.PARTIAL)


def _count_line(report: Report) -> str:
    counts = Counter(o.kind.value for o in report.outcomes)
    line = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no ranges"
    planned = [o for o in report.outcomes if o.kind is OutcomeKind.PLANNED]
    if planned:  # a dry run: nothing was recovered
        line += f"; would send {sum(o.recovered for o in planned)} records; dry run: nothing was written"
    else:
        line += f"; {sum(o.recovered for o in report.outcomes if o.kind in _DELIVERED)} records recovered"
        already = sum(1 for o in report.outcomes if _already(o))
        if already:
            line += f" ({already} of the ranges {_ALREADY}: nothing new written)"
    if report.messages is not None:  # a line of its own: each fits 100 columns
        line += "\nmessages: " + ", ".join(f"{report.messages.get(k, 0)} {k}" for k in _MESSAGE_COUNTS)
    return line


def render(
    report: Report, *, output: str, out: IO[str], console: Console, notes: Console, quiet: bool = False
) -> None:
    """Print the report: `table` (one line per range, then a summary line) to `console`'s file,
    `json` (one document) or `jsonl` (a line per range, then a line of totals) to `out`; the
    report's notes go after the table, or to `notes` (stderr) beside a document."""
    if output == "json":
        write_json(report, out)
    elif output == "jsonl":
        for o in report.outcomes:
            out.write(json.dumps(o.describe()) + "\n")
        document = summary(report)
        del document["ranges"]
        out.write(json.dumps(document) + "\n")
    else:
        cut = False
        if not quiet and report.outcomes:
            for line, shortened in _lines(report.outcomes, table_width(console)):
                console.print(line, soft_wrap=True, highlight=False)
                cut = cut or shortened
        console.print(escape(_count_line(report)), soft_wrap=True, highlight=False)
        if cut:
            console.print("(reasons cut to fit: --json shows every value whole)", soft_wrap=True, style="dim")
    out.flush()
    for note in report.notes:  # for people: after the table, or on stderr beside a document
        (console if output == "table" else notes).print(escape(note), soft_wrap=True, style="yellow")


@contextmanager
def progress(
    console: Console, total: int | None, enabled: bool, *, what: str = "ranges",
    status: Callable[[], str] | None = None,
) -> Iterator[Callable[[Outcome | None], None]]:  # fmt: skip
    """A progress bar on a terminal (done/total ranges, records recovered, ETA, and `status()`:
    lambda: sinks' rate, in flight, breaker, stale and superseded); a no-op elsewhere."""
    if not enabled:
        yield lambda _outcome: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    class _Status(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(status() if status is not None else "")

    bar = Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(bar_width=4 if status is not None else 40),  # room for the status within 100 columns
        MofNCompleteColumn(),
        TextColumn("{task.fields[records]} records"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        *([_Status(table_column=Column(no_wrap=True, overflow="ellipsis"))] if status is not None else []),
        console=console,
        transient=True,
        redirect_stderr=True,
        redirect_stdout=False,
    )
    with bar:
        task = bar.add_task(what, total=total, records=0)
        recovered = 0

        def advance(outcome: Outcome | None) -> None:
            nonlocal recovered
            recovered += outcome.recovered if outcome is not None else 0
            bar.update(task, advance=1, records=recovered)

        yield advance
