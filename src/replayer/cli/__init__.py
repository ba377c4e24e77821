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

__all__ = ["COMMANDS", "app", "load", "main"]

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


def main() -> None:
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    app = load(command)
    # Everything imported so far lives as long as the process: keep the cyclic GC from
    # walking it again and again while pages of records are decoded.
    gc.freeze()
    try:
        app()
    except ReplayerError as exc:  # a last guard: our own errors are messages, not tracebacks
        from replayer.cli._app import print_error, stderr_console

        print_error(stderr_console(), exc)
        sys.exit(2)
