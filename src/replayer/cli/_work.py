"""What every working command does around its work: logs, pre-flight, output, the exit code."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

import typer
from rich.console import Console

from replayer import logs
from replayer.cli._app import print_error, stderr_console
from replayer.config import Settings
from replayer.report import Report, render

if TYPE_CHECKING:
    from replayer.cli.preflight import Checks

__all__ = ["finish", "log_level", "preflight_or_exit", "results_stream", "setup", "show_progress"]


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
    """Run the pre-flight checks unless --no-preflight; on a problem, one line each and exit 2."""
    if settings.no_preflight:
        return
    from replayer.cli.preflight import preflight

    problems = asyncio.run(preflight(checks))
    if problems:
        console = stderr_console()
        for problem in problems:
            print_error(console, f"pre-flight: {problem}")
        console.print("nothing was read or written (--no-preflight skips these checks)", soft_wrap=True)
        raise typer.Exit(2)


def _table_console(out: TextIO) -> Console:
    console = Console(file=out)
    if not console.is_terminal:
        console = Console(file=out, width=100_000, soft_wrap=True)
    return console


def finish(settings: Settings, report: Report) -> None:
    """Print the report as --output says, then exit with its code."""
    out = results_stream(settings)
    render(report, output=settings.output_format, out=out, console=_table_console(out), quiet=settings.quiet)
    raise typer.Exit(report.exit_code)
