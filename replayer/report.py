"""How a run tells people (one line per range, a progress bar) and programs (json, jsonl) what happened.

Every command renders through here: one table style, one summary document, one exit rule.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from replayer.model import Outcome, OutcomeKind

__all__ = [
    "CANCELLED",
    "STOPPED_BY_BREAKER",
    "STOP_CODES",
    "Report",
    "exit_code",
    "progress",
    "render",
    "summary",
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


def _where(o: Outcome) -> str:
    where = o.report_uri or (", ".join(o.delivered_to) if o.delivered_to else "") or o.reason
    if o.reason and o.kind is not OutcomeKind.REPLAYED and where != o.reason:
        where = f"{where} ({o.reason})"
    return where or "-"


def _row(o: Outcome) -> list[str]:
    f = o.failure
    missing = ", ".join(f"{g.first}..{g.last}" for g in o.gaps)
    where = _where(o) + (f"; missing {missing}" if missing else "")
    if f is None:
        return [o.kind.value, "-", str(o.recovered), "-", "-", where]
    return [
        o.kind.value,
        f.range_id,
        str(o.recovered),
        f.shard_id,
        f"{f.start_sequence}..{f.end_sequence}",
        where,
    ]


def _lines(outcomes: Sequence[Outcome]) -> Iterator[Text]:
    """One line per range, columns padded to the widest cell: never wrapped, nothing cut."""
    header = ["outcome", "range_id", "records", "shard", "sequence numbers", "where / why"]
    rows = [_row(o) for o in outcomes]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    yield Text(
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  " + header[-1], "bold"
    )
    for o, row in zip(outcomes, rows, strict=True):
        line = Text(row[0].ljust(widths[0]), _STYLE[o.kind])
        line.append("  " + "  ".join(c.ljust(w) for c, w in zip(row[1:-1], widths[1:], strict=False)))
        line.append("  " + row[-1])
        yield line


def _count_line(report: Report) -> str:
    counts = Counter(o.kind.value for o in report.outcomes)
    line = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no ranges"
    line += f"; {sum(o.recovered for o in report.outcomes)} records recovered"
    if report.messages is not None:
        line += "; messages: " + ", ".join(f"{report.messages.get(k, 0)} {k}" for k in _MESSAGE_COUNTS)
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
        if not quiet and report.outcomes:
            for line in _lines(report.outcomes):
                console.print(line, soft_wrap=True, highlight=False)
        console.print(escape(_count_line(report)), soft_wrap=True, highlight=False)
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
