"""The `replayer` command line. Each module registers its commands on the shared app."""

from __future__ import annotations

import gc
import sys

from replayer.cli import demo as _demo  # noqa: F401  (registers demo)
from replayer.cli import redrive as _redrive  # noqa: F401  (registers redrive)
from replayer.cli import replay as _replay  # noqa: F401  (registers replay, fetch)
from replayer.cli import service as _service  # noqa: F401  (registers drain, run)
from replayer.cli._app import app, order_commands, print_error, stderr_console
from replayer.errors import ReplayerError

__all__ = ["app", "main"]

order_commands()


def main() -> None:
    # Everything imported so far lives as long as the process: keep the cyclic GC from
    # walking it again and again while pages of records are decoded.
    gc.freeze()
    try:
        app()
    except ReplayerError as exc:  # a last guard: our own errors are messages, not tracebacks
        print_error(stderr_console(), exc)
        sys.exit(2)
