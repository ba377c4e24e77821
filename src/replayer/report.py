"""How a run tells people (rich table, progress) and programs (`--json`) what happened."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from replayer.model import Outcome, OutcomeKind

__all__ = ["exit_code", "progress", "render_table", "summary", "write_json"]

_STYLE = {
    OutcomeKind.REPLAYED: "green",
    OutcomeKind.PARTIAL: "yellow",
    OutcomeKind.EXPIRED: "red",
    OutcomeKind.REJECTED: "red",
    OutcomeKind.RETRY: "magenta",
    OutcomeKind.CONFLICT: "red",
}


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when every range was fully replayed, 1 otherwise (partial, expired, rejected, failed)."""
    return 0 if all(o.kind is OutcomeKind.REPLAYED for o in outcomes) else 1


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    counts = Counter(o.kind.value for o in outcomes)
    return {
        "ranges": [o.describe() for o in outcomes],
        "totals": {
            "ranges": len(outcomes),
            **{kind.value: counts.get(kind.value, 0) for kind in OutcomeKind},
            "records_recovered": sum(o.recovered for o in outcomes),
            "ranges_with_loss": sum(1 for o in outcomes if o.gaps),
        },
        "exit_code": exit_code(outcomes),
    }


def write_json(outcomes: Sequence[Outcome], out: TextIO) -> None:
    json.dump(summary(outcomes), out, indent=2)
    out.write("\n")


def _short(sequence: str) -> str:
    return sequence if len(sequence) <= 14 else f"…{sequence[-10:]}"


def render_table(outcomes: Sequence[Outcome], console: Console) -> None:
    table = Table(title="replayer", show_lines=False)
    for column in ("range", "outcome", "recovered", "missing", "where / why"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        f = o.failure
        name = f"{f.shard_id} {_short(f.start_sequence)}..{_short(f.end_sequence)}" if f else "(unparsed)"
        missing = ", ".join(f"{_short(g.first)}..{_short(g.last)}" for g in o.gaps) or "-"
        where = o.report_uri or (", ".join(o.delivered_to) if o.delivered_to else "") or o.reason
        if o.reason and o.kind is not OutcomeKind.REPLAYED and where != o.reason:
            where = f"{where} ({o.reason})"
        style = _STYLE[o.kind]
        table.add_row(
            escape(name), f"[{style}]{o.kind.value}[/]", str(o.recovered), escape(missing), escape(where)
        )
    console.print(table)
    counts = Counter(o.kind.value for o in outcomes)
    console.print(
        ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        + f"; {sum(o.recovered for o in outcomes)} records recovered"
    )


@contextmanager
def progress(console: Console, total: int, enabled: bool) -> Iterator[Any]:
    """A progress bar on a terminal; a no-op callable elsewhere."""
    if not enabled:
        yield lambda _outcome: None
        return
    bar = Progress(
        TextColumn("[bold]replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task("ranges", total=total)
        yield lambda _outcome: bar.advance(task)
