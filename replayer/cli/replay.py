"""`replayer replay` and `replayer fetch`: manual replays."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from replayer.allow import AllowList
from replayer.cli import start_up_done
from replayer.cli._app import command, print_error, stderr_console
from replayer.cli._work import (
    finish,
    no_stream_allowed,
    preflight_or_exit,
    setup,
    show_progress,
    work_through,
)
from replayer.config import Settings
from replayer.errors import ConfigError, ParseError
from replayer.model import Failure, Origin, Outcome
from replayer.report import Report

if TYPE_CHECKING:
    from replayer.plan import RangePlan
    from replayer.selection import Selection

__all__ = ["fetch", "replay", "selection_of"]


def selection_of(settings: Settings) -> Selection:
    """--where/--since/--until/--shard/--limit; ConfigError when records would be left out of an archive."""
    from replayer.selection import Selection

    selection = Selection.of(
        where=settings.where,
        since=settings.since,
        until=settings.until,
        shards=settings.shards,
        limit=settings.limit,
    )
    whole = [uri for uri in settings.to if not uri.startswith("lambda:")]
    if selection.narrows_records and whole:
        raise ConfigError(
            f"--where, --since, --until and --limit choose what lambda: sinks receive; {', '.join(whole)} "
            "keeps whole ranges: archive without them, or see the records with --dry-run --show"
        )
    return selection


def _plan(
    settings: Settings, failures: Sequence[Failure], allow: AllowList, selection: Selection
) -> list[Outcome]:
    """What a dry run reports: each range read and worked out (what it would send); nothing written."""
    from replayer.core import by_deadline, rejected

    ordered = by_deadline(failures)
    allowed = [f for f in ordered if allow.allows(f.stream_arn)]
    start_up_done()  # with --no-preflight, its reads begin here
    plans = asyncio.run(_plans(settings, allowed, selection)) if allowed else []
    by_range = {p.failure.range_id: p for p in plans}
    planned = []
    for f in ordered:
        if not allow.allows(f.stream_arn):
            planned.append(rejected(f, f"stream {f.stream_arn} is not in --allow-stream"))
            continue
        plan = by_range[f.range_id]
        planned.append(plan.outcome(settings.to))
        if settings.show:
            for record in plan.sent:
                sys.stdout.write(record.json.decode() + "\n")
    sys.stdout.flush()
    return planned


async def _plans(settings: Settings, failures: Sequence[Failure], selection: Selection) -> list[RangePlan]:
    from replayer.plan import plan_ranges
    from replayer.sources import clients_for, readers_for

    async with clients_for(settings) as clients:
        return await plan_ranges(
            clients,
            failures,
            readers=readers_for(settings, clients),
            selection=selection,
            no_filter=settings.no_filter,
        )


async def _replay(
    settings: Settings, failures: Sequence[Failure], show: bool, selection: Selection
) -> Report:
    from replayer.cli._work import Stop, stopped
    from replayer.sinks.guard import Guard
    from replayer.sources import build_replayer, clients_for

    guard, stop = Guard.of(settings), Stop()
    guard.on_stop.append(stop.halt)  # the breaker tripped: no range starts
    async with clients_for(settings) as clients:
        replayer, _ = build_replayer(settings, clients, selection=selection, guard=guard)
        report = await work_through(
            settings,
            lambda advance: replayer.scheduler(concurrency=settings.concurrency, on_done=advance),
            failures,
            _itself,
            show=show,
            stop=stop,
            status=guard.line if any(u.startswith("lambda:") for u in settings.to) else None,
        )
    return stopped(report, guard, stop)


def _itself(failure: Failure) -> Failure:
    return failure


def _work(settings: Settings, failures: Sequence[Failure], bad: Sequence[Outcome]) -> None:
    """Replay (or plan) `failures`, then report; `bad` are inputs that did not parse."""
    from replayer.cli.preflight import Checks

    console = setup(settings)
    allow = AllowList.of(settings.allow_streams)
    try:
        selection = selection_of(settings)
    except ConfigError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    failures = [f for f in failures if selection.takes(f)]
    if allow.empty and failures:  # every range would be rejected: a set-up mistake, said before any work
        print_error(console, f"pre-flight: {no_stream_allowed(failures, 'the input')}")
        console.print("nothing was read or written", soft_wrap=True)
        raise typer.Exit(2)
    streams = [f.stream_arn for f in failures if f.payload is None and allow.allows(f.stream_arn)]
    read_tables = streams if settings.skip_stale else []  # --skip-stale reads the tables back
    checks = Checks(sinks=settings.to, streams=streams, read_tables=read_tables)
    preflight_or_exit(settings, checks)  # dry runs too: same answer
    if settings.dry_run:
        finish(settings, Report([*bad, *_plan(settings, failures, allow, selection)]))
    report = Report([])
    if failures:
        report = asyncio.run(_replay(settings, failures, show_progress(settings, console), selection))
    finish(settings, dataclasses.replace(report, outcomes=[*bad, *report.outcomes]))


@command("replay")
def replay(
    settings: Settings,
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE",
            hidden=True,  # the docstring explains FILE; Typer would print its type as <list[str]>
            show_default=False,
        ),
    ] = None,
) -> None:
    """Replay the ranges named by invocation records (SQS, SNS, Pipes or S3-destination forms).

    Each FILE holds one invocation record, a JSON array of them, or JSON Lines; - or no FILE
    reads stdin. A range named twice is replayed and reported once.
    """
    from replayer.sources.files import STDIN, read_inputs  # sources/ wires the AWS clients: loaded when used

    console = stderr_console()
    names = list(paths or [])
    if (not names or STDIN in names) and sys.stdin.isatty():
        console.print(
            "reading invocation records from stdin: paste them and end with Ctrl-D, "
            "or give a FILE (replayer replay -h)",
            soft_wrap=True,
        )
    try:
        inputs = read_inputs(names, sys.stdin.buffer)
    except ConfigError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    if inputs.empty:
        console.print(
            f"no invocation records found in {', '.join(inputs.labels)}", soft_wrap=True, markup=False
        )
        raise typer.Exit(0)
    _work(settings, inputs.failures, inputs.bad)


@command("fetch")
def fetch(settings: Settings) -> None:
    """Replay a range given by hand: no invocation record needed."""
    from replayer.parse import parse_record

    stream_arn = settings.stream_arn or ""
    info_key = "KinesisBatchInfo" if ":kinesis:" in stream_arn else "DDBStreamBatchInfo"
    record = {
        "requestContext": {"condition": "ManualReplay"},
        info_key: {
            "shardId": settings.shard_id,
            "startSequenceNumber": settings.start,
            "endSequenceNumber": settings.end,
            "streamArn": stream_arn,
        },
    }
    try:
        failure = dataclasses.replace(parse_record(record, path="options"), origin=Origin.MANUAL)
    except ParseError as exc:
        print_error(stderr_console(), exc)
        raise typer.Exit(2) from None
    _work(settings, [failure], [])
