"""The sample events in tests/events/: the one place that knows where they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import TESTS

EVENTS = TESTS / "events"


def event_text(name: str) -> str:
    """The text of tests/events/<name>, as stored."""
    return (EVENTS / name).read_text()


def load_event(name: str) -> Any:
    """tests/events/<name>, parsed."""
    return json.loads(event_text(name))


def sample_paths() -> list[Path]:
    """Every top-level sample event file (tests/events/*.json), sorted by name."""
    return sorted(EVENTS.glob("*.json"))
