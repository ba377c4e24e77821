"""replayer: re-read the stream records that AWS Lambda discarded, before they expire."""

from replayer.errors import ConfigError, ParseError, ReplayerError
from replayer.model import Failure, Gap, Origin, Outcome, OutcomeKind, StreamKind, StreamRecord

__version__ = "0.1.0"

__all__ = [
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
