"""replayer.logs: structlog loads when a line is first logged at the configured level, and what was
bound before is on every line, as structlog's own context would be."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

from tests.support import ROOT


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True, timeout=60
    )


def test_a_process_that_logs_nothing_at_its_level_never_loads_structlog() -> None:
    out = _run(
        """
        import sys
        from replayer import logs
        logs.configure("warning")
        log = logs.get_logger("replayer.test")
        with logs.bound(message_id="m1"):
            log.info("below_the_level", n=1)
            log.debug("below_the_level", n=2)
        print("structlog" in sys.modules)
        """
    )
    assert out.stdout.strip() == "False" and out.stderr == ""


def test_lines_carry_what_was_bound_before_and_after_structlog_loaded() -> None:
    out = _run(
        """
        import sys
        from replayer import logs
        logs.configure("info")
        log = logs.get_logger("replayer.test")
        with logs.bound(message_id="m1", where="outer"):
            log.debug("dropped")
            print("structlog" in sys.modules)
            log.info("first", n=1)  # loads structlog here
            with logs.bound(where="inner", shard_id="s1"):
                log.warning("second", where="explicit")
                log.warning("third")
        log.error("fourth")
        logs.clear()
        """
    )
    assert out.stdout.strip() == "False"
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("first", "info"),
        ("second", "warning"),
        ("third", "warning"),
        ("fourth", "error"),
    ]
    assert lines[0]["message_id"] == "m1" and lines[0]["where"] == "outer" and lines[0]["n"] == 1
    assert lines[1]["where"] == "explicit" and lines[1]["shard_id"] == "s1" and lines[1]["message_id"] == "m1"
    assert lines[2]["where"] == "inner"  # bound later wins, as with structlog's own context
    assert "message_id" not in lines[3] and "where" not in lines[3]  # left the block: unbound
    assert all("timestamp" in line for line in lines)


def test_clear_forgets_values_bound_before_structlog_loaded() -> None:
    out = _run(
        """
        from replayer import logs
        logs.configure("info")
        context = logs.bound(source="sqs")
        context.__enter__()
        logs.clear()
        logs.get_logger("replayer.test").info("after_clear")
        """
    )
    assert "source" not in json.loads(out.stderr)


def test_only_replayer_logs_imports_structlog() -> None:
    """Every module logs through replayer.logs: a direct structlog import would load it at start-up."""
    importers = []
    for path in sorted((ROOT / "replayer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "structlog" for name in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["replayer/logs.py"]
