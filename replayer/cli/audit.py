"""`replayer audit`: Lambda's on-failure counts per mapping against what the archive holds."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from replayer.cli import start_up_done
from replayer.cli._app import command, print_error
from replayer.cli._work import setup
from replayer.config import Settings

if TYPE_CHECKING:
    from replayer.audit import MappingAudit

__all__ = ["audit", "render"]

WIDTH = 100


def _since(settings: Settings) -> datetime | None:
    if not settings.since:
        return None
    try:
        moment = datetime.fromisoformat(settings.since.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _count(value: float | int | None) -> str:
    return "-" if value is None else f"{int(value)}"


def render(rows: list[MappingAudit], places: dict[str, str], since: datetime, until: datetime) -> str:
    """The table for people: one line per mapping and, under it, what its difference means (100 columns)."""
    lines = [
        f"audit {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: Lambda's on-failure counts "
        "against the archive",
        f"{'mapping':<10} {'function':<30} {'sent':>7} {'dropped':>7} {'archived':>8} {'lost':>6} "
        f"{'diff':>6} {'at-risk':>7}",
    ]
    for row in rows:
        function = (row.function or "?").rsplit(":function:", 1)[-1]
        mapping = (row.uuid or "unknown")[:8]
        lines.append(
            f"{mapping:<10} {function[:30]:<30} {_count(row.delivered):>7} {_count(row.dropped):>7} "
            f"{row.archived:>8} {row.lost:>6} {_count(row.difference):>6} {row.at_risk_records:>7}"
        )
        lines += textwrap.wrap(row.where(places), WIDTH, initial_indent="  ", subsequent_indent="    ")
    if not rows:
        lines.append("no mapping: no range in the window, and no --watch-stream or --watch-function")
    for name, line in places.items():
        lines += textwrap.wrap(f"{name}: {line}", WIDTH, subsequent_indent="  ")
    return "\n".join(lines)


def _place(figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"cannot read ({figures['error']})"
    if "objects" in figures:
        return f"{figures['objects']} objects ({figures.get('location')})"
    return (
        f"{figures.get('visible', 0)} waiting, {figures.get('in_flight', 0)} in flight ({figures.get('url')})"
    )


async def _audit(settings: Settings) -> tuple[list[MappingAudit], dict[str, str], datetime, datetime, int]:
    from replayer.allow import AllowList
    from replayer.archive import store_from_uri
    from replayer.audit import audit as audit_archive
    from replayer.aws import Clients
    from replayer.status import gather_status

    async with Clients() as clients:
        store = store_from_uri(settings.redrive_from or "", clients)
        if store is None:
            raise ValueError(f"--from {settings.redrive_from}: expected s3://BUCKET[/PREFIX] or file:DIR")
        rows, since, until, unreadable = await audit_archive(
            clients, store, since=_since(settings), watch_streams=settings.watch_streams,
            watch_functions=settings.watch_functions, allow=AllowList.of(settings.allow_streams or ["*"]),
        )  # fmt: skip
        places: dict[str, str] = {}
        if settings.queue or settings.quarantine:
            document = await gather_status(clients, queue=settings.queue, quarantine=settings.quarantine)
            for key, name in (
                ("queue", "failure queue"),
                ("dead_letter_queue", "its DLQ"),
                ("quarantine", "quarantine"),
            ):
                if key in document:
                    places[name] = _place(document[key])
        return rows, places, since, until, unreadable


@command("audit")
def audit(settings: Settings) -> None:
    """Per event source mapping: what Lambda says it sent to the on-failure destination
    (OnFailureDestinationDeliveredEventCount) and dropped (DroppedEventCount), against what the
    archive holds for the same window (archived, reported lost), and where to look for the difference.

    Exit 0 when every mapping's counts match, 1 when one differs or Lambda dropped records, 2 on a
    configuration problem.
    """
    from replayer.archive import StoreError

    console = setup(settings)
    if settings.since and _since(settings) is None:
        print_error(console, f"--since {settings.since!r} is not an ISO 8601 time")
        raise typer.Exit(2)
    start_up_done()
    try:
        rows, places, since, until, unreadable = asyncio.run(_audit(settings))
    except (ValueError, StoreError) as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    if settings.output_format == "table":
        sys.stdout.write(render(rows, places, since, until) + "\n")
        if unreadable:
            sys.stdout.write(
                f"{unreadable} manifests could not be read (replayer status --from says which)\n"
            )
    else:
        document = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "mappings": [row.describe(places) for row in rows],
            "places": places,
            "unreadable_manifests": unreadable,
        }
        sys.stdout.write(json.dumps(document, indent=None if settings.output_format == "jsonl" else 2) + "\n")
    differs = any((row.difference or 0) != 0 or (row.dropped or 0) > 0 for row in rows)
    raise typer.Exit(1 if differs else 0)
