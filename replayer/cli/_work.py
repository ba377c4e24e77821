"""What every working command does around its work: logs, pre-flight, output, the exit code."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO, TypeVar

import typer
from rich.console import Console

from replayer import logs
from replayer.cli import start_up_done
from replayer.cli._app import print_error, stderr_console
from replayer.config import Settings
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.report import Report, render

if TYPE_CHECKING:
    from replayer.cli.preflight import Checks
    from replayer.core import Scheduler
    from replayer.sinks.guard import Guard

T = TypeVar("T")
NOT_STARTED = "not started: interrupted; run the command again to work on it"
CUT_SHORT = "interrupted while running, after the grace period; run the command again to finish it"

__all__ = [
    "Stop",
    "finish",
    "interrupted_note",
    "log_level",
    "no_stream_allowed",
    "preflight_or_exit",
    "results_stream",
    "run_batch",
    "setup",
    "show_progress",
    "stop_on_signals",
    "stopped",
    "work_through",
]


def log_level(settings: Settings) -> str:
    """--log-level, raised by -v (info) and -vv (debug), lowered by --quiet (error)."""
    if settings.verbose >= 2:
        return "debug"
    if settings.verbose == 1 and settings.log_level != "debug":
        return "info"
    if settings.quiet:
        return "error"
    return settings.log_level


def setup(settings: Settings) -> Console:
    """Logs configured for the command; the console for people (stderr)."""
    logs.configure(log_level(settings))
    return stderr_console()


def results_stream(settings: Settings) -> TextIO:
    """Where the result goes: stdout, or stderr when `--to -` or `--show` writes records to stdout."""
    return sys.stderr if "-" in settings.to or settings.show else sys.stdout


def show_progress(settings: Settings, console: Console) -> bool:
    return console.is_terminal and not settings.quiet


def preflight_or_exit(settings: Settings, checks: Checks) -> None:
    """Run the pre-flight checks unless --no-preflight; on a problem, one line each and exit 2.
    Start-up is over after it: the SDK is loaded (`start_up_done`)."""
    if settings.no_preflight:
        start_up_done()
        return
    from replayer.cli.preflight import preflight

    problems = asyncio.run(preflight(replace(checks, assume_roles=settings.assume_roles)))
    start_up_done()
    if problems:
        console = stderr_console()
        for problem in problems:
            print_error(console, f"pre-flight: {problem}")
        console.print("nothing was read or written (--no-preflight skips these checks)", soft_wrap=True)
        raise typer.Exit(2)


def no_stream_allowed(failures: Iterable[Failure], source: str) -> str:
    """The line that stops a command with no stream allowed: the streams `source` names, the flags to add."""
    streams = list(dict.fromkeys(f.stream_arn for f in failures))
    flags = " ".join(f"--allow-stream {arn}" for arn in streams)
    named = f"{source} names 1 stream" if len(streams) == 1 else f"{source} names {len(streams)} streams"
    return (
        f"no stream is allowed (--allow-stream, or REPLAYER_ALLOW_STREAMS; deny by default): {named}; "
        f"to read them add: {flags}"
    )


def _table_console(out: TextIO) -> Console:
    console = Console(file=out)
    if not console.is_terminal:
        console = Console(file=out, width=100_000, soft_wrap=True)
    return console


def finish(settings: Settings, report: Report) -> None:
    """Print the report as --output says, then exit with its code."""
    out = results_stream(settings)
    render(
        report, output=settings.output_format, out=out, console=_table_console(out), notes=stderr_console(),
        quiet=settings.quiet,
    )  # fmt: skip
    raise typer.Exit(report.exit_code)


class Stop:
    """The signal (SIGINT, SIGTERM) that asked a batch to stop, once one did; or why it halted
    without one (`halt`: the breaker tripped, the run was cancelled)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self.halted: str | None = None
        self.event = asyncio.Event()

    def __call__(self, sig: signal.Signals) -> None:
        if self.signal is None:
            self.signal = sig.name
        self.event.set()

    def halt(self, reason: str) -> None:
        """Stop starting ranges for `reason` (those running finish within the grace period)."""
        if self.halted is None:
            self.halted = reason
        self.event.set()

    @property
    def not_started(self) -> str:
        if self.halted is not None and self.signal is None:
            return f"not started: the run stopped ({self.halted}); run the command again to resume"
        return NOT_STARTED


@asynccontextmanager
async def stop_on_signals(stop: Stop | None = None) -> AsyncIterator[Stop]:
    """SIGINT and SIGTERM set the returned `Stop` (`stop`, or a new one) instead of killing the
    process, while inside."""
    stop = stop or Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_batch(
    scheduler: Scheduler[T],
    items: Iterable[T],
    failure_of: Callable[[T], Failure],
    *,
    stop: Stop,
    grace: float,
) -> list[Outcome]:
    """Work every item through `scheduler`; one outcome per range, earliest deadline first.

    When `stop` is set no new range starts; running ones get `grace` seconds, then are cut
    short. Ranges not done are reported as `retry`, saying so: nothing is counted as done
    that was not, and what was done (create-only writes) is not redone by a rerun.
    """
    scheduler.start()
    tickets = await scheduler.submit_many(items)
    finished = asyncio.create_task(scheduler.close(finish_queued=True))
    stopped = asyncio.create_task(stop.event.wait())
    await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():
        await scheduler.close(finish_queued=False, within=grace)
    await finished
    stopped.cancel()
    outcomes = []
    for ticket in sorted(dict.fromkeys(tickets), key=lambda t: (t.deadline, t.order)):
        outcome = ticket.result()
        if outcome is None:
            reason = CUT_SHORT if ticket.started is not None else stop.not_started
            outcome = Outcome(OutcomeKind.RETRY, failure_of(ticket.item), reason=reason)
        outcomes.append(outcome)
    return outcomes


async def work_through(
    settings: Settings,
    scheduler_for: Callable[[Callable[[Outcome | None], None]], Scheduler[T]],
    items: Sequence[T],
    failure_of: Callable[[T], Failure],
    *,
    show: bool,
    stop: Stop | None = None,
    status: Callable[[], str] | None = None,
) -> Report:
    """Work `items` through the scheduler `scheduler_for(on_done)` makes, with a progress bar
    when `show` (and `status()` on it), stopping cleanly on SIGINT/SIGTERM or when `stop` is
    halted; the report says what was and was not done."""
    from replayer.report import progress

    async with stop_on_signals(stop) as stop:
        with progress(stderr_console(), len(items), show, status=status) as advance:
            outcomes = await run_batch(
                scheduler_for(advance), items, failure_of, stop=stop, grace=settings.grace_seconds
            )
    return Report(outcomes, interrupted=stop.signal, notes=interrupted_note(stop, outcomes))


def stopped(report: Report, guard: Guard, stop: Stop) -> Report:
    """The report of a run whose breaker tripped (`guard` stopped it, not a signal): exit 3, saying why."""
    from replayer.report import STOPPED_BY_BREAKER

    if guard.stopped is None or stop.signal is not None or not guard.breaker.trips:
        return report
    left = sum(1 for o in report.outcomes if o.kind is OutcomeKind.RETRY)
    note = f"stopped: {guard.stopped}; {left} ranges not done (retry): run the command again once fixed"
    return replace(report, stopped=STOPPED_BY_BREAKER, stop_reason=guard.stopped, notes=[*report.notes, note])


def interrupted_note(stop: Stop, outcomes: Iterable[Outcome]) -> list[str]:
    """The line saying what an interrupted run did and did not do."""
    if stop.signal is None:
        return []
    outcomes = list(outcomes)
    not_done = sum(1 for o in outcomes if o.reason in (stop.not_started, CUT_SHORT))
    return [
        f"interrupted ({stop.signal}): {len(outcomes) - not_done} of {len(outcomes)} ranges done, "
        f"{not_done} not done (listed as retry); run the same command again to finish: what was "
        "done is kept"
    ]
