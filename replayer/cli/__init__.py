"""The `replayer` command line. Each module registers its commands on the shared app.

`main` imports only the module of the command it runs (start-up is paid on every run);
``from replayer.cli import app`` gives the app with every command registered.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

from replayer.errors import ReplayerError

__all__ = ["COMMANDS", "app", "load", "main", "start_up_done"]

# Each command and the module that registers it. A command missing here still works (every
# module is loaded when the command is not known), it only starts slower.
COMMANDS = {
    "replay": "replay",
    "fetch": "replay",
    "demo": "demo",
    "redrive": "redrive",
    "run": "service",
    "drain": "service",
    "status": "status",
    "runs": "runs",
    "audit": "audit",
    "why": "why",
}


def load(command: str | None = None) -> Any:
    """The Typer app with `command`'s module imported (None or an unknown name: every module)."""
    module = COMMANDS.get(command or "")
    for name in [module] if module else sorted(set(COMMANDS.values())):
        importlib.import_module(f"replayer.cli.{name}")
    from replayer.cli._app import app, order_commands

    order_commands()
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return load()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_gc_paused = False  # main turned the cyclic GC off for start-up


def start_up_done() -> None:
    """The command's work begins: start-up made what lives as long as the process (modules, the
    SDK's models and clients), so the cyclic GC, off since `main`, is turned back on and skips
    all of it (frozen). Every command calls this before its work; nothing when `main` did not pause it."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def main() -> None:
    # Start-up allocates much and frees little: the cyclic GC would walk what it made again and
    # again (~60 ms of CPU of a replay's start-up). Off until `start_up_done`.
    global _gc_paused
    _gc_paused = gc.isenabled()
    gc.disable()
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    app = load(command)
    try:
        app()
    except ReplayerError as exc:  # a last guard: our own errors are messages, not tracebacks
        from replayer.cli._app import print_error, stderr_console

        print_error(stderr_console(), exc)
        sys.exit(2)
