"""`replayer demo`: a failed batch replayed end to end against an embedded emulator."""

from __future__ import annotations

from typing import Annotated

import typer

from replayer.cli import start_up_done
from replayer.cli._app import command, print_error, stderr_console
from replayer.config import Settings

__all__ = ["demo"]


@command("demo")
def demo(
    settings: Settings,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the emulator running until Ctrl-C.")] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Make the docs' world (table orders, bucket my-archive, queues, failure.json here), "
            "print its export lines and serve it until Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Replay a failed batch end to end against an embedded local AWS emulator (needs the [demo] extra)."""
    import importlib.util

    if importlib.util.find_spec("moto") is None:  # the emulator is an extra
        print_error(
            stderr_console(),
            "replayer demo needs the [demo] extra: pip install 'lambda-stream-replayer[demo]'",
        )
        raise typer.Exit(2)
    from replayer.demo import run_demo, serve_demo

    start_up_done()
    raise typer.Exit(serve_demo() if serve else run_demo(keep=keep))
