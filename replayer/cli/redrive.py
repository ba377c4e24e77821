"""`replayer redrive`: re-drive archived ranges to a repair function, resuming where a run stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from typing import TYPE_CHECKING

import typer

from replayer.cli._app import command, print_error
from replayer.cli._work import finish, preflight_or_exit, setup, show_progress
from replayer.cli.runs import recorded
from replayer.config import Settings
from replayer.errors import ConfigError
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.report import Report

if TYPE_CHECKING:
    from rich.console import Console

    from replayer.archive.manifest import ArchivedRange
    from replayer.aws import Clients
    from replayer.plan import ArchivedSend
    from replayer.sinks import LambdaSink
    from replayer.sources.archive import Redriver, Selection

__all__ = ["redrive"]


def _targets(settings: Settings, clients: Clients) -> list[LambdaSink]:
    from replayer.cli.replay import selection_of
    from replayer.sinks import LambdaSink
    from replayer.sources import sinks_for

    for uri in settings.to:
        if not uri.startswith("lambda:"):
            raise ConfigError(f"--to {uri!r}: redrive re-drives to functions only; expected lambda:FUNCTION")
    sinks = sinks_for(settings, clients, selection=selection_of(settings))
    return [sink for sink in sinks if isinstance(sink, LambdaSink)]


def _selection(settings: Settings) -> Selection:
    from replayer.sources.archive import Selection, parse_time

    selection = Selection(
        range_ids=frozenset(settings.range_ids),
        stream_arns=settings.stream_filter,
        since=parse_time(settings.since, "--since") if settings.since else None,
        until=parse_time(settings.until, "--until") if settings.until else None,
    )
    selection.folders()  # validates --stream-arn
    return selection


async def _redrive(settings: Settings, selection: Selection, show: bool) -> Report:
    from replayer.allow import AllowList
    from replayer.archive.mac import ManifestKey
    from replayer.sources import clients_for
    from replayer.sources.archive import Redriver, archive_from_uri, in_shard_order

    concurrency = settings.concurrency
    async with clients_for(settings) as clients:
        archive = archive_from_uri(settings.redrive_from or "", clients)
        targets = _targets(settings, clients)
        redriver = Redriver(
            archive, targets, force=settings.force,
            allow=AllowList.of(settings.allow_streams), range_budget=settings.range_budget_seconds,
            manifest_key=ManifestKey(clients, settings.manifest_key) if settings.manifest_key else None,
        )  # fmt: skip
        ranges, bad = await redriver.find(selection, concurrency=max(8, concurrency))
        ranges = [r for r in ranges if not settings.shards or r.failure.shard_id in settings.shards]
        if settings.dry_run:
            return Report(bad + await _dry_run(settings, redriver, ranges))
        done = await recorded(  # the run on the record in the archive's ledger (runs/NAME/)
            settings, name=settings.run_name or "", archive=archive, clients=clients, targets=targets,
            ranges=in_shard_order(ranges), failure_of=_failure, show=show,
            scheduler_for=lambda advance: redriver.scheduler(concurrency=concurrency, on_done=advance),
            may_read=lambda r: redriver.refusal(r.failure) is None,
        )  # fmt: skip
        return dataclasses.replace(done, outcomes=[*bad, *done.outcomes])


async def _dry_run(settings: Settings, redriver: Redriver, ranges: list[ArchivedRange]) -> list[Outcome]:
    """Each range as a real run would take it: read back and checked (a damaged folder is rejected,
    as the real run rejects it), what would be sent (printed with --show), nothing written."""
    from replayer.cli.replay import selection_of
    from replayer.plan import archived_sends

    allowed = [r for r in ranges if redriver.refusal(r.failure) is None]
    sends = await archived_sends(
        redriver.archive, allowed, selection=selection_of(settings), no_filter=settings.no_filter
    )
    outcomes = [_with(o, sends) for o in redriver.plan(ranges)]
    if settings.show:
        for outcome in outcomes:
            send = sends.get(outcome.failure.range_id) if outcome.failure else None
            if send is not None and outcome.kind is OutcomeKind.PLANNED:
                sys.stdout.writelines(record.json.decode() + "\n" for record in send.sent)
        sys.stdout.flush()
    return outcomes


def named_run(settings: Settings, console: Console) -> Settings:
    """The settings with the run's name (--run, or a generated one), printed first."""
    from replayer.sinks.guard.run import generated_name

    name = settings.run_name or generated_name()
    console.print(
        f"run {name} (replayer runs show {name} --from {settings.redrive_from})",
        soft_wrap=True, markup=False, highlight=False,
    )  # fmt: skip
    return dataclasses.replace(settings, run_name=name)


def _failure(archived: ArchivedRange) -> Failure:
    return archived.failure


def _with(outcome: Outcome, sends: dict[str, ArchivedSend]) -> Outcome:
    """A planned range's reason, with what lambda: sinks would be sent of it; a damaged one rejected."""
    send = sends.get(outcome.failure.range_id) if outcome.failure else None
    if send is None or outcome.kind is not OutcomeKind.PLANNED:
        return outcome
    if send.damaged is not None:
        return dataclasses.replace(outcome, kind=OutcomeKind.REJECTED, reason=send.damaged)
    if not outcome.reason.startswith("would re-drive"):
        return outcome
    return dataclasses.replace(outcome, reason=f"{outcome.reason}: {send.phrase}")


@command("redrive")
def redrive(settings: Settings) -> None:
    """Re-drive archived ranges to a repair function; a rerun skips what already succeeded."""
    from replayer.archive.store import StoreError
    from replayer.aws import Clients
    from replayer.cli.preflight import Checks
    from replayer.sources.archive import archive_from_uri

    console = setup(settings)
    if not settings.allow_streams:  # deny by default: nothing would be re-driven
        print_error(
            console,
            "--allow-stream (or REPLAYER_ALLOW_STREAMS) is required: redrive re-drives only the streams "
            "it allows (deny by default; '*' allows every stream)",
        )
        raise typer.Exit(2)
    try:
        selection = _selection(settings)
        archive_from_uri(settings.redrive_from or "", Clients())
        _targets(settings, Clients())
    except (ConfigError, ValueError) as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    preflight_or_exit(settings, Checks(sinks=settings.to, archive=settings.redrive_from))  # dry runs too
    if not settings.dry_run:
        settings = named_run(settings, console)
    try:
        report = asyncio.run(_redrive(settings, selection, show_progress(settings, console)))
    except ConfigError as exc:  # --skip-stale's pre-flight, once the archive named the tables
        print_error(console, exc)
        raise typer.Exit(2) from None
    except StoreError as exc:
        # an archive that is not there is a usage error; one that failed to answer is not
        missing = exc.code in ("NoSuchBucket", "NoSuchDirectory")
        print_error(console, f"--from {exc}" if missing else exc)
        raise typer.Exit(2 if missing else 1) from None
    if not report.outcomes:
        what = "matching ranges" if selection != type(selection)() else "archived ranges"
        console.print(f"no {what} found in {settings.redrive_from}", soft_wrap=True, markup=False)
        raise typer.Exit(0)
    finish(settings, report)
