"""`replayer why RANGE_ID`: a failed range's invocation joined with its function's log lines."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from typing import TYPE_CHECKING, Annotated

import typer

from replayer.cli import start_up_done
from replayer.cli._app import command, print_error
from replayer.cli._work import setup
from replayer.config import Settings

if TYPE_CHECKING:
    from replayer.why import Why

__all__ = ["render", "why"]

WIDTH = 100


def render(why: Why) -> str:
    """The range, its invocation and its log lines, for people (100 columns: long lines wrap)."""
    failure = why.archived.failure
    lines = [f"range {why.range_id}"]
    for text in (
        f"records {failure.start_sequence}..{failure.end_sequence} of {failure.shard_id}",
        failure.stream_arn,
    ):
        lines += textwrap.wrap(
            text, WIDTH, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False
        )
    if why.function_arn:
        lines.append(
            f"failed in {why.function_arn.rsplit(':function:', 1)[-1]} (version {why.version or '?'}), "
            f"request {why.request_id or '?'}"
        )
        lines.append(
            f"  {why.condition or '?'}, function error {why.function_error or 'none'}, "
            f"at {why.failed_at.isoformat() if why.failed_at else '?'}"
        )
    if why.window and why.log_group:
        lines.append(
            f"log lines of {why.log_group}, {why.window[0]:%H:%M:%S} to {why.window[1]:%H:%M:%S} UTC:"
        )
    for line in why.lines:
        for n, text in enumerate(line.message.splitlines() or [""]):
            head = f"  {line.timestamp:%H:%M:%S.%f}"[:14] + "  " if n == 0 else " " * 16
            lines += textwrap.wrap(text, WIDTH, initial_indent=head, subsequent_indent=" " * 16) or [head]
    if why.truncated:
        lines.append(f"  (more lines: shown the first {len(why.lines)}; --json has them as shown)")
    if why.note:
        lines += textwrap.wrap(why.note, WIDTH)
    return "\n".join(lines)


async def _explain(settings: Settings, range_id: str) -> Why:
    from replayer.archive import store_from_uri
    from replayer.aws import Clients
    from replayer.why import WhyError, explain

    async with Clients() as clients:
        store = store_from_uri(settings.redrive_from or "", clients)
        if store is None:
            raise WhyError(f"--from {settings.redrive_from}: expected s3://BUCKET[/PREFIX] or file:DIR")
        return await explain(clients, store, range_id)


@command("why")
def why(
    settings: Settings,
    range_id: Annotated[str, typer.Argument(metavar="RANGE_ID", hidden=True, show_default=False)],
) -> None:
    """Why a range failed: its invocation record's request id joined with the function's CloudWatch
    Logs (FilterLogEvents within the invocation's time), the error lines and the function version.

    RANGE_ID is the range id a run, `status` or `audit` printed (a unique prefix of 8 or more
    characters is enough).

    Exit 0 when log lines were found, 1 when none were, 2 when they cannot be read (a permission,
    the archive, the range id).
    """
    from replayer.archive import StoreError
    from replayer.why import WhyError

    console = setup(settings)
    start_up_done()
    try:
        found = asyncio.run(_explain(settings, range_id))
    except (WhyError, StoreError) as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    if settings.output_format == "table":
        sys.stdout.write(render(found) + "\n")
    else:
        sys.stdout.write(
            json.dumps(found.describe(), indent=None if settings.output_format == "jsonl" else 2) + "\n"
        )
    raise typer.Exit(0 if found.lines else 1)
