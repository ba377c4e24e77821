"""The Lambda entrypoint: ``replayer.lambda_handler.handler``.

Takes SQS events (answers ``batchItemFailures`` for every message not settled), SNS
events and S3 event notifications for S3 on-failure-destination objects (both raise when
something is not settled, so Lambda's own retries and on-failure destination take over).
Where `REPLAYER_WATCH_STREAMS` or `REPLAYER_WATCH_FUNCTIONS` is set, an EventBridge schedule event
runs one round of the at-risk watch (`replayer.watch`) and answers what it saw.

Configuration comes from ``REPLAYER_*`` environment variables (``REPLAYER_TO``,
``REPLAYER_ALLOW_STREAMS``, ``REPLAYER_QUARANTINE``, ``REPLAYER_CONCURRENCY``,
``REPLAYER_SAFETY_MARGIN_SECONDS``, ...). This module imports nothing heavy: the SDK and
the core load on the first invocation and stay loaded, with their clients and event
loop, for every warm invocation after it. In Lambda (``AWS_LAMBDA_RUNTIME_API`` set) the settings
are checked at import: a mistake (no ``REPLAYER_ALLOW_STREAMS``, a bad value) fails the init.
"""

from __future__ import annotations

import atexit
import gc
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from replayer.sources.lambda_ import LambdaRuntime

__all__ = ["handler", "reset"]

_runtime: LambdaRuntime | None = None

if os.environ.get("AWS_LAMBDA_RUNTIME_API"):  # in Lambda: a configuration mistake fails the init, clearly
    from replayer.config import load as _load

    _load("lambda", None, os.environ)  # ConfigError, one line a problem (e.g. no REPLAYER_ALLOW_STREAMS)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Replay what the event names; see the module docstring for what is answered when."""
    global _runtime
    if _runtime is not None:
        return _runtime.invoke(event, context)
    # A cold start: the runtime and, during the first invocation, the SDK's modules, models and
    # clients are made to live as long as the process; the cyclic GC would walk them again and
    # again while they load. Off until that invocation ends, then everything it kept is frozen.
    paused = gc.isenabled()
    gc.disable()
    try:
        from replayer.sources.lambda_ import LambdaRuntime

        _runtime = LambdaRuntime.from_env()
        atexit.unregister(reset)
        atexit.register(reset)  # a script calling the handler: its clients close before the loop goes
        return _runtime.invoke(event, context)
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def reset() -> None:
    """Forget the runtime (its loop and clients): the next invocation reads the environment again."""
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None
