"""`replayer runs`: the named runs an archive's ledger holds; `runs show NAME`, `runs cancel NAME`.

Also where `redrive` keeps its run on the record (`recorded`): the ledger opened or resumed,
each range's account written as it ends, a cancel request from elsewhere obeyed, the final
state written, whatever happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from replayer.cli._app import app, print_error, stderr_console
from replayer.cli._work import Stop, work_through
from replayer.config import Settings
from replayer.errors import ConfigError
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.report import CANCELLED, STOPPED_BY_BREAKER, Report

if TYPE_CHECKING:
    from replayer.archive.ledger import RunRecord
    from replayer.archive.store import Store
    from replayer.aws import Clients
    from replayer.core import Scheduler
    from replayer.sinks import LambdaSink

__all__ = ["recorded", "run_options", "runs_app"]

T = TypeVar("T")
_FINE = {OutcomeKind.REPLAYED, OutcomeKind.SKIPPED, OutcomeKind.PLANNED}
_WIDTH = 100

runs_app = typer.Typer(
    help="The named runs in an archive's ledger (redrive --run NAME): list, show one, cancel one.",
    no_args_is_help=False,
    rich_markup_mode="rich",  # as the app's: every help text here is escaped
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(runs_app, name="runs")

From = Annotated[
    str | None,
    typer.Option("--from", metavar="URI", help=escape("The archive: s3://BUCKET[/PREFIX] or file:DIR "
                 "[env: REPLAYER_REDRIVE_FROM]"), show_default=False),
]  # fmt: skip
AsJson = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]


# ---- a run on the record (redrive)


def run_options(settings: Settings, command: str = "redrive") -> dict[str, Any]:
    """The options a run was started with: those not at the command's defaults (for the ledger)."""
    from replayer.config import options_for

    chosen = {}
    for option in options_for(command):
        value = getattr(settings, option.name)
        if value != option.default(command):
            chosen[option.name] = list(value) if isinstance(value, tuple) else value
    return chosen


async def _prime(archive: Store, ranges: Sequence[Any], target: LambdaSink) -> None:
    """--latest-per-key across the run: every selected record of every range makes older ones superseded."""
    from replayer.archive.read import Damaged, read_records
    from replayer.archive.store import StoreError
    from replayer.sinks import SinkError

    for archived in ranges:
        try:
            records = await read_records(archive, archived)
            target.guard.prime(archived.failure, target.admitted(archived.failure, records))
        except (StoreError, Damaged, SinkError):
            continue  # the range's own delivery reports it


async def recorded(
    settings: Settings,
    *,
    name: str,
    archive: Store,
    clients: Clients,
    targets: Sequence[LambdaSink],
    ranges: Sequence[T],
    scheduler_for: Callable[[Callable[[Outcome | None], None]], Scheduler[T]],
    failure_of: Callable[[T], Failure],
    show: bool,
    may_read: Callable[[T], bool] = lambda _range: True,
) -> Report:
    """Work `ranges` as run `name`, written to the archive's ledger (see the module doc).
    `may_read`: the ranges whose records may count for --latest-per-key (those the run may re-drive)."""
    from replayer.sinks.guard.run import RecordedRun

    guard = targets[0].guard  # one per process: every target shares it
    if settings.skip_stale and not settings.no_preflight:
        from replayer.cli.preflight import Checks, preflight

        streams = sorted({failure_of(r).stream_arn for r in ranges})
        problems = await preflight(Checks(read_tables=streams))
        if problems:
            raise ConfigError("pre-flight: " + "; ".join(problems) + " (nothing was invoked)")
    if settings.latest_per_key:
        await _prime(archive, [r for r in ranges if may_read(r)], targets[0])
    run = RecordedRun(archive, name, guard, clients, command="redrive", options=run_options(settings))
    await run.start(len(ranges))
    stop = Stop()
    guard.on_stop.append(stop.halt)

    def scheduler(advance: Callable[[Outcome | None], None]) -> Scheduler[T]:
        def done(outcome: Outcome | None) -> None:
            advance(outcome)
            run.record(outcome)

        return scheduler_for(done)

    try:
        report = await work_through(
            settings, scheduler, ranges, failure_of, show=show, stop=stop, status=guard.line
        )
    except BaseException as exc:
        await asyncio.shield(run.finish("failed", reason=f"{type(exc).__name__}: {exc}"))
        raise
    stopped = None
    if run.cancelled is not None and stop.signal is None:
        state, stopped, reason = "cancelled", CANCELLED, guard.stopped
    elif guard.breaker.trips and guard.stopped is not None and stop.signal is None:
        state, stopped, reason = "stopped", STOPPED_BY_BREAKER, guard.stopped
    elif stop.signal is not None:
        state, reason = "stopped", f"interrupted ({stop.signal})"
    else:
        bad = [o for o in report.outcomes if o.kind not in _FINE]
        state = "failed" if bad else "completed"
        reason = f"{len(bad)} of {len(report.outcomes)} ranges not re-driven" if bad else None
    await run.finish(state, reason=reason, outcomes=report.outcomes)
    notes = list(report.notes)
    if stopped is not None:
        left = sum(1 for o in report.outcomes if o.kind is OutcomeKind.RETRY)
        notes.append(
            f"run {name} {state}: {reason}; {left} ranges left in the archive: run the same command "
            f"again (--run {name}) to resume"
        )
    return dataclasses.replace(report, notes=notes, stopped=stopped, stop_reason=reason, run=name)


# ---- the commands


def _archive_uri(value: str | None) -> str:
    uri = value or os.environ.get("REPLAYER_REDRIVE_FROM", "").strip()
    if not uri:
        raise ConfigError(
            "--from (or REPLAYER_REDRIVE_FROM) is required: the archive the runs are recorded in"
        )
    return uri


def _store(uri: str, clients: Clients) -> Store:
    from replayer.sources.archive import archive_from_uri

    return archive_from_uri(uri, clients)


def _fail(console: Console, exc: Exception) -> typer.Exit:
    from replayer.archive.store import StoreError

    if isinstance(exc, StoreError) and exc.code in ("NoSuchBucket", "NoSuchDirectory"):
        print_error(console, f"--from {exc}")
        return typer.Exit(2)
    print_error(console, exc)
    return typer.Exit(2 if isinstance(exc, (ConfigError, ValueError)) else 1)


def _who(arn: Any) -> str:
    """The short form of an identity ARN for the table: what follows the last ':' (role/session)."""
    return str(arn).rpartition(":")[2] if arn else "-"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]


async def _all_runs(uri: str) -> list[RunRecord]:
    from replayer.archive.ledger import Ledger, run_names
    from replayer.aws import Clients

    async with Clients() as clients:
        store = _store(uri, clients)
        records = [await Ledger(store, name).read() for name in await run_names(store)]
    return [r for r in records if r is not None]


async def _one_run(uri: str, name: str) -> RunRecord | None:
    from replayer.archive.ledger import Ledger
    from replayer.aws import Clients

    async with Clients() as clients:
        return await Ledger(_store(uri, clients), name).read()


def _print(console: Console, line: str) -> None:
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def _out() -> Console:
    console = Console(file=sys.stdout)
    return console if console.is_terminal else Console(file=sys.stdout, width=100_000, soft_wrap=True)


@runs_app.callback(invoke_without_command=True)
def runs(ctx: typer.Context, source: From = None, as_json: AsJson = False) -> None:
    """List the runs recorded in an archive: name, state, when, who, what each did."""
    ctx.obj = {"from": source, "json": as_json}
    if ctx.invoked_subcommand is not None:
        return
    console = stderr_console()
    try:
        records = asyncio.run(_all_runs(_archive_uri(source)))
    except Exception as exc:
        raise _fail(console, exc) from None
    records.sort(key=lambda r: str(r.header.get("started") or ""))
    if as_json:
        json.dump({"runs": [_brief(r) for r in records]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    out = _out()
    if not records:
        _print(out, "no runs recorded")
        return
    header = ["run", "state", "started", "by", "ranges", "sent", "stale", "superseded", "failed"]
    rows = [header] + [
        [
            r.name, r.state, str(r.header.get("started") or "-")[:19], _who(r.header.get("by"))[:24],
            *(str(r.totals[k]) for k in ("ranges", "sent", "stale", "superseded", "failed")),
        ]
        for r in records
    ]  # fmt: skip
    for line in _table(rows):
        _print(out, line)


def _brief(record: RunRecord) -> dict[str, Any]:
    described = record.describe()
    return {k: v for k, v in described.items() if k not in ("events", "ranges")}


@runs_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The run's name.", show_default=False)],
    source: From = None,
    as_json: AsJson = False,
) -> None:
    """One run: who started it and how, its state and why, and each range's account."""
    console = stderr_console()
    parent = ctx.obj or {}
    try:
        record = asyncio.run(_one_run(_archive_uri(source or parent.get("from")), _name(name)))
    except Exception as exc:
        raise _fail(console, exc) from None
    if record is None:
        print_error(console, f"no run {name!r} in the archive")
        raise typer.Exit(1)
    if as_json or parent.get("json"):
        json.dump(record.describe(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    out = _out()
    for line in _story(record):
        _print(out, line)


def _name(name: str) -> str:
    from replayer.archive.ledger import valid_name

    if not valid_name(name):
        raise ConfigError(f"{name!r} is not a run name (letters, digits, '.', '_', '-'; at most 64)")
    return name


def _wrapped(label: str, text: str) -> list[str]:
    """`label text`, wrapped at 100 columns under itself (nothing cut: --json has it whole, too)."""
    indent = " " * (len(label) + 1)
    lines = textwrap.wrap(
        f"{label} {text}", _WIDTH, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )
    return [line if len(line) <= _WIDTH else line[: _WIDTH - 1] + "…" for line in lines]  # an ARN too long


def _flags(options: dict[str, Any]) -> str:
    """The options as the command line gave them: ``--rate 20 --to lambda:f``."""
    from replayer.config import OPTIONS

    flags = {o.name: o for o in OPTIONS}
    words = []
    for name, value in sorted(options.items()):
        option = flags.get(name)
        if option is None or name in ("as_json", "output"):
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            words.append(
                option.flag
                if v is True
                else f"{option.flag} {v:g}"
                if isinstance(v, float)
                else f"{option.flag} {v}"
            )
    return " ".join(words)


def _short(shard: Any) -> str:
    """A shard's distinctive tail (``shardId-0000...-f35f62ef`` -> ``f35f62ef``), as the run table shows it."""
    return str(shard).rpartition("-")[2][:8] or "-"


def _story(record: RunRecord) -> list[str]:
    d = record.describe()
    totals = d["totals"]
    lines = [f"run {d['name']}: {d['state']}"]
    if d["reason"]:
        lines += _wrapped("  why:", str(d["reason"]))
    if d["last_error"] and str(d["last_error"]) not in str(d["reason"] or ""):
        lines += _wrapped("  the function's last error:", str(d["last_error"]))
    lines += _wrapped(
        "  started",
        f"{d['started']} by {d['by'] or 'unknown'}; {d['attempts']} attempt(s); last event {d['updated']}",
    )
    lines += _wrapped(f"  replayer {d['command']}", _flags(d["options"]))
    if d["cancel_requested"]:
        c = d["cancel_requested"]
        lines += _wrapped("  cancel requested by", f"{c.get('by') or 'unknown'} at {c.get('at')}")
    lines.append(
        f"  {totals['ranges']} ranges: {totals['sent']} records sent, {totals['stale']} stale, "
        f"{totals['superseded']} superseded, {totals['failed']} failed"
    )
    if d["ranges"]:
        rows = [["range", "outcome", "sent", "stale", "superseded", "failed", "shard", "versions"]]
        rows += [
            [
                str(r.get("range_id"))[:8], str(r.get("outcome")),
                *(str(r.get(k, 0)) for k in ("sent", "stale", "superseded", "failed")),
                _short(r.get("shard_id")), ",".join(r.get("executed_versions") or []) or "-",
            ]
            for r in d["ranges"]
        ]  # fmt: skip
        lines += _table(rows)
    return lines


@runs_app.command("cancel")
def cancel(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The run's name.", show_default=False)],
    source: From = None,
) -> None:
    """Make a run going on elsewhere stop after its in-flight invocations (it ends `cancelled`)."""
    console = stderr_console()
    parent = ctx.obj or {}
    try:
        done, state = asyncio.run(_cancel(_archive_uri(source or parent.get("from")), _name(name)))
    except Exception as exc:
        raise _fail(console, exc) from None
    if state is None:
        print_error(console, f"no run {name!r} in the archive")
        raise typer.Exit(1)
    if state != "running":
        print_error(console, f"run {name} is not running (it is {state}): nothing to cancel")
        raise typer.Exit(1)
    what = "asked to stop" if done else "already asked to stop"
    _print(console, f"run {name} {what}: it ends cancelled after its in-flight invocations")


async def _cancel(uri: str, name: str) -> tuple[bool, str | None]:
    from replayer.archive.ledger import Ledger
    from replayer.aws import Clients
    from replayer.sinks.guard.run import caller_arn

    async with Clients() as clients:
        ledger = Ledger(_store(uri, clients), name)
        record = await ledger.read()
        if record is None or record.state != "running":
            return False, None if record is None else record.state
        return await ledger.request_cancel(await caller_arn(clients)), record.state
