"""`replayer status`: what is pending (queue, dead-letter queue, quarantine, archive) and time left."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from replayer.cli import start_up_done
from replayer.cli._app import command, print_error
from replayer.cli._work import setup
from replayer.config import Settings

__all__ = ["status"]


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "unknown"
    sign, seconds = ("-" if seconds < 0 else ""), abs(int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{sign}{hours}h{rest // 60:02d}m" if hours else f"{sign}{rest // 60}m{rest % 60:02d}s"


def _queue_line(name: str, figures: dict[str, Any]) -> str:
    where = figures.get("url") or figures.get("location") or figures.get("arn")
    if "error" in figures:
        return f"{name}: {where}: cannot read ({figures['error']})"
    if "objects" in figures:
        return f"{name}: {where}: {figures['objects']} objects"
    return (
        f"{name}: {figures['visible']} visible, {figures['in_flight']} in flight, {figures['delayed']} delayed; "
        f"oldest {_age(figures.get('oldest_age_seconds'))}  ({where})"
    )


def render(document: dict[str, Any], console: Console) -> None:
    """The status for people: one line per part."""
    lines = []
    for key, name in (
        ("queue", "failure queue"),
        ("dead_letter_queue", "dead-letter queue"),
        ("quarantine", "quarantine"),
    ):
        if key in document:
            lines.append(_queue_line(name, document[key]))
    archive = document.get("archive")
    if archive is not None:
        if "error" in archive:
            lines.append(f"archive: {archive['location']}: cannot read ({archive['error']})")
        else:
            lines.append(
                f"archive: {archive['ranges']} ranges ({archive['replayed']} replayed, {archive['partial']} partial, "
                f"{archive['expired']} expired, {archive['redriven']} re-driven, {archive['damaged']} damaged"
                + (f", {archive['at_risk']} at-risk windows" if archive.get("at_risk") else "")
                + "), "
                f"{archive['records']} records  ({archive['location']})"
            )
    nearest = document["nearest_expiry"]
    if nearest["seconds"] is None:
        lines.append(f"nearest expiry: {nearest['basis']}")
    else:
        lines.append(f"nearest expiry: in {_age(nearest['seconds'])}, {nearest['at']} ({nearest['basis']})")
    for line in lines:
        console.print(escape(line), soft_wrap=True)


async def _gather(settings: Settings) -> dict[str, Any]:
    from replayer.aws import Clients
    from replayer.status import gather_status

    async with Clients() as clients:
        return await gather_status(
            clients, queue=settings.queue, quarantine=settings.quarantine, archive=settings.redrive_from,
            manifest_key=settings.manifest_key,
        )  # fmt: skip


@command("status")
def status(settings: Settings) -> None:
    """What is pending: the failure queue (visible, in flight, oldest), its dead-letter queue, the
    quarantine, the archive's ranges and records, and the nearest expiry among ranges not yet saved."""
    console = setup(settings)
    if not (settings.queue or settings.quarantine or settings.redrive_from):
        print_error(
            console, "give at least one of --queue, --quarantine, --from (or their REPLAYER_ variables)"
        )
        raise typer.Exit(2)
    out = Console(file=sys.stdout, soft_wrap=True)
    try:
        while True:
            document = asyncio.run(_gather(settings))
            start_up_done()  # --watch: every later round is work
            if settings.output_format == "table":
                if settings.watch:
                    out.clear()
                render(document, out)
            else:
                sys.stdout.write(
                    json.dumps(document, indent=None if settings.output_format == "jsonl" else 2) + "\n"
                )
                sys.stdout.flush()
            if not settings.watch:
                break
            time.sleep(settings.watch)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    failed = any(isinstance(v, dict) and "error" in v for v in document.values())
    raise typer.Exit(1 if failed else 0)
