"""The CLI's inputs: files and stdin holding invocation records, read into `Failure`s.

Each range is kept once (first mention): the same invocation record twice in one input,
or in two inputs, is worked on and reported once. A line (JSON Lines) or element (an array)
that is not an invocation record is one rejection naming the input and where; the others
are worked on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from replayer.core import claims_key
from replayer.errors import ConfigError, ParseError
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.parse import parse_document

__all__ = ["Inputs", "STDIN", "read_inputs"]

STDIN = "-"


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the inputs name: each range once, and a rejection per input that does not parse."""

    failures: tuple[Failure, ...]
    bad: tuple[Outcome, ...]
    labels: tuple[str, ...]  # the inputs read, for messages ("<stdin>", "failures.json")
    duplicates: int = 0  # mentions of a range already named with the same claims

    @property
    def empty(self) -> bool:
        return not self.failures and not self.bad


def _label(name: str) -> str:
    return "<stdin>" if name == STDIN else name


def read_inputs(paths: Sequence[str], stdin: BinaryIO) -> Inputs:
    """Every range named by `paths` (none, or -: `stdin`), each once, first mention kept.

    Raises ConfigError for an input that cannot be read at all (missing, a directory,
    unreadable): a usage error, reported before anything is worked on.
    """
    names = list(paths) or [STDIN]
    documents: list[tuple[str, bytes]] = []
    for name in names:
        try:
            documents.append((_label(name), stdin.read() if name == STDIN else Path(name).read_bytes()))
        except FileNotFoundError:
            raise ConfigError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ConfigError(f"{name}: is a directory; expected a file of invocation records") from None
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    failures: dict[str, Failure] = {}
    bad: list[Outcome] = []
    duplicates = 0
    for label, text in documents:
        errors: list[ParseError] = []  # each line or element that does not parse: its own rejection
        try:
            parsed = parse_document(text, path=label, payloads=True, errors=errors)  # the operator named it
        except ParseError as exc:  # the document as a whole (not UTF-8, too large, not JSON)
            errors, parsed = [exc], []
        bad += [Outcome(OutcomeKind.REJECTED, None, reason=str(exc)) for exc in errors]
        for failure in parsed:  # the same range claimed otherwise is judged on its own (#21)
            if claims_key(failure) in failures:
                duplicates += 1
            else:
                failures[claims_key(failure)] = failure
    return Inputs(tuple(failures.values()), tuple(bad), tuple(label for label, _ in documents), duplicates)
