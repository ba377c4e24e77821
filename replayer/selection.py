"""Choosing what to re-drive: `--where`, `--since`/`--until`, `--shard`, `--limit`.

A selection narrows what `lambda:` sinks receive, after the mapping's own filter: only
records matching the `--where` pattern (the language of `replayer.filtering`, matched as
Lambda matches the mapping's filter), that arrived (approximately: DynamoDB's
``ApproximateCreationDateTime``, Kinesis' ``approximateArrivalTimestamp``) at or after
`--since` and before `--until`, of ranges on a `--shard`, at most `--limit` records in the
whole run. Archives always keep whole ranges, so a selection is refused with archive sinks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from replayer.errors import ConfigError
from replayer.filtering import Number, Pattern, PatternError, criteria_for, filter_document
from replayer.model import Failure, StreamKind, StreamRecord

__all__ = ["Selection", "arrival", "parse_moment", "read_pattern", "to_send"]


def read_pattern(text: str) -> Pattern:
    """A `--where` value: a JSON pattern, or ``@FILE`` holding one; ConfigError says what is wrong."""
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text()
        except OSError as exc:
            raise ConfigError(f"--where {text}: cannot read the file ({exc.strerror})") from None
    try:
        return Pattern.parse(source)
    except PatternError as exc:
        raise ConfigError(f"--where: {exc}") from None


def parse_moment(text: str, option: str) -> datetime:
    """ISO 8601 (UTC when no zone), or epoch seconds."""
    try:
        moment = (
            datetime.fromtimestamp(float(text), UTC) if _is_number(text) else datetime.fromisoformat(text)
        )
    except (ValueError, OverflowError, OSError):
        raise ConfigError(f"{option} {text!r}: expected an ISO 8601 time or epoch seconds") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def arrival(kind: StreamKind, document: Mapping[str, Any]) -> Decimal | None:
    """A record's approximate arrival in epoch seconds, from its filter document (None: unknown)."""
    if kind is StreamKind.KINESIS:
        value = document.get("approximateArrivalTimestamp")
    elif kind is StreamKind.KAFKA:  # the record's timestamp, in epoch milliseconds
        value = document.get("timestamp")
        if isinstance(value, Number):
            return value.value / 1000
    else:
        inner = document.get("dynamodb")
        value = inner.get("ApproximateCreationDateTime") if isinstance(inner, Mapping) else None
    if isinstance(value, Number):
        return value.value
    if isinstance(value, str):
        try:
            return Decimal(value)
        except ArithmeticError:
            return None
    return None


@dataclass
class _Budget:
    left: int | None


@dataclass(frozen=True, slots=True)
class Selection:
    """What to re-drive; the default selects everything. Shared by every range of a run (`limit`)."""

    where: Pattern | None = None
    since: datetime | None = None
    until: datetime | None = None
    shards: tuple[str, ...] = ()
    limit: int | None = None
    _budget: _Budget = field(default_factory=lambda: _Budget(None), compare=False, repr=False)

    @classmethod
    def of(
        cls,
        *,
        where: str | None = None,
        since: str | None = None,
        until: str | None = None,
        shards: Iterable[str] = (),
        limit: int | None = None,
    ) -> Selection:
        """From option texts; ConfigError says which one is wrong."""
        return cls(
            where=read_pattern(where) if where else None,
            since=parse_moment(since, "--since") if since else None,
            until=parse_moment(until, "--until") if until else None,
            shards=tuple(shards),
            limit=limit,
        )

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ConfigError("--limit must be 0 or more")
        self._budget.left = self.limit

    @property
    def narrows_records(self) -> bool:
        """True when records of a range may be left out (not only whole ranges)."""
        return (
            self.where is not None
            or self.since is not None
            or self.until is not None
            or self.limit is not None
        )

    @property
    def active(self) -> bool:
        return self.narrows_records or bool(self.shards)

    def takes(self, failure: Failure) -> bool:
        """Whether a range is selected at all (its shard)."""
        return not self.shards or failure.shard_id in self.shards

    def matches(self, kind: StreamKind, record: StreamRecord) -> bool:
        """Whether one record matches `--where`, `--since` and `--until` (not counting `--limit`)."""
        if self.where is None and self.since is None and self.until is None:
            return True
        try:
            document = filter_document(kind, record)
        except ValueError:
            return False
        if self.where is not None and not self.where.matches(document):
            return False
        if self.since is not None or self.until is not None:
            when = arrival(kind, document)
            if when is None:
                return False
            if self.since is not None and when < Decimal(str(self.since.timestamp())):
                return False
            if self.until is not None and when >= Decimal(str(self.until.timestamp())):
                return False
        return True

    def matching(self, kind: StreamKind, records: Iterable[StreamRecord]) -> list[StreamRecord]:
        """The records that match, in order, without spending the limit (for plans)."""
        return [r for r in records if self.matches(kind, r)]

    def take(self, kind: StreamKind, records: Iterable[StreamRecord]) -> list[StreamRecord]:
        """The records that match, cut to what is left of `--limit` (which they then use up)."""
        chosen = self.matching(kind, records)
        if self._budget.left is not None:
            chosen = chosen[: self._budget.left]
            self._budget.left -= len(chosen)
        return chosen

    def describe(self) -> dict[str, Any]:
        return {
            "where": self.where.text if self.where else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "shards": list(self.shards),
            "limit": self.limit,
        }


def to_send(
    failure: Failure,
    records: Iterable[StreamRecord],
    *,
    selection: Selection | None,
    apply_filter: bool = True,
) -> list[StreamRecord]:
    """What a `lambda:` sink sends of a range's records: those its mapping's filter admits (all of
    them with `apply_filter` off or no known filter), then those `selection` takes.

    PatternError when the mapping holds a pattern these rules cannot compile.
    """
    kept = list(records)
    mapping = failure.mapping
    if apply_filter and mapping is not None and mapping.filters:
        kept = criteria_for(mapping.filters).select(failure.kind, kept)
    if selection is not None and selection.narrows_records:
        kept = selection.take(failure.kind, kept)
    return kept
