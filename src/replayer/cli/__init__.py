"""The `replayer` command line. Each module registers its commands on the shared app."""

from __future__ import annotations

import gc
import sys

from rich.console import Console

from replayer.cli import redrive as _redrive  # noqa: F401  (registers redrive)
from replayer.cli import replay as _replay  # noqa: F401  (registers replay, fetch, demo)
from replayer.cli import service as _service  # noqa: F401  (registers run, drain)
from replayer.cli._app import app, print_error
from replayer.errors import ReplayerError

__all__ = ["app", "main"]


def main() -> None:
    # Everything imported so far lives as long as the process: keep the cyclic GC from
    # walking it again and again while pages of records are decoded.
    gc.freeze()
    try:
        app()
    except ReplayerError as exc:  # a last guard: our own errors are messages, not tracebacks
        print_error(Console(stderr=True), exc)
        sys.exit(2)
