"""replayer: re-read the stream records that AWS Lambda discarded, before they expire."""

from functools import cache

from replayer.errors import ConfigError, ParseError, ReplayerError
from replayer.model import Failure, Gap, Origin, Outcome, OutcomeKind, StreamKind, StreamRecord

# The name on the package index (`pip install lambda-stream-replayer`); the import package and the
# command stay `replayer` (the index's `replayer` is an unrelated project).
DISTRIBUTION = "lambda-stream-replayer"


@cache
def _installed_version() -> str:
    """The version pyproject.toml declares (its one place), as the installed metadata carries it."""
    from importlib import metadata  # on first use only: the Lambda handler module stays light

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _installed_version()
    raise AttributeError(f"module 'replayer' has no attribute {name!r}")


__all__ = [
    "DISTRIBUTION",
    "ConfigError",
    "Failure",
    "Gap",
    "Origin",
    "Outcome",
    "OutcomeKind",
    "ParseError",
    "ReplayerError",
    "StreamKind",
    "StreamRecord",
    "__version__",
]
