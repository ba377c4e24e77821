"""The error types replayer raises on purpose. Anything else is a bug."""

from __future__ import annotations

__all__ = ["ConfigError", "ParseError", "ReplayerError"]


class ReplayerError(Exception):
    """Base of every error replayer reports to a user as a message, not a traceback."""


class ParseError(ReplayerError):
    """Input is not a failure record replayer understands.

    `path` names where in the input the problem is (e.g. ``$.DDBStreamBatchInfo.shardId``).
    """

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class ConfigError(ReplayerError):
    """A flag, environment variable or sink URI is invalid."""
