"""Helpers the test modules share: emulators, fault proxy, workloads, sample events.

Test modules import from here (never from each other); fixtures live in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent  # the repository: cwd for subprocesses, home of deploy/ and .cache/
