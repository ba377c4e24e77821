"""The Lambda handler called in-process: its context object and its metric lines."""

from __future__ import annotations

import json
from typing import Any


class LambdaContext:
    """The part of Lambda's context object the handler uses."""

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms
        self.function_name = "replayer"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def emf_lines(out: str) -> list[dict[str, Any]]:
    """The embedded-metric-format lines the handler printed (at least one)."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert lines, "no embedded-metric-format line on stdout"
    return lines
