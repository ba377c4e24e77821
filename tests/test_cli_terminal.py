"""The CLI as people meet it: on a pseudo-terminal (progress bar, Ctrl-C summary, stdin hint),
and piped (one line per range, nothing wrapped or cut, logs apart), as real processes."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.aws import DynamoTable, make_queue, queue_counts, send
from tests.support.faultproxy import FaultProxy, Rule, op

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("REPLAYER_") and k not in ("NO_COLOR", "TERM")
    }
    defaults = {"AWS_ENDPOINT_URL": endpoint, "TERM": "xterm-256color", "COLUMNS": "120"}
    return env | defaults | {"REPLAYER_ALLOW_STREAMS": "*"} | extra  # deny by default: these tests allow all


class Terminal:
    """`python -m replayer ARGS` with stdin, stdout and stderr on one pseudo-terminal."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "replayer", *args], stdin=slave, stdout=slave, stderr=slave,
            env=env, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.seen = ""

    def read_until(self, done: Callable[[str], bool], limit: float = 60.0) -> str:
        """Everything the terminal showed until `done(text)` (or the process ended, or `limit` passed)."""
        end = time.monotonic() + limit
        while not done(self.seen) and time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                self.seen += chunk.decode(errors="replace")
        return self.seen

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self) -> int:
        self.read_until(lambda _: self.process.poll() is not None, limit=90)
        code = self.process.wait(timeout=30)
        self.read_until(lambda _: False, limit=0.5)
        os.close(self.master)
        return code


def _plain(text: str) -> str:
    return _ANSI.sub("", text).replace("\r", "\n")


@pytest.fixture
def slow_ranges(table: DynamoTable, proxy: FaultProxy, tmp_path: Path) -> Path:
    """Twelve ranges, each read slowly (the proxy delays every GetShardIterator)."""
    table.put(24)
    records = table.stream_records()
    ranges = [table.invocation_record(2 * i, 2 * i + 1, records) for i in range(12)]
    path = tmp_path / "failures.json"
    path.write_text(json.dumps(ranges))
    proxy.add(Rule(op("GetShardIterator"), delay=1.0))
    return path


def test_progress_bar_then_ctrl_c_prints_what_was_done_and_exits_130(
    slow_ranges: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    term = Terminal(
        ["replay", str(slow_ranges), "--to", f"file:{archive}", "--concurrency", "2"], _env(proxy.url)
    )
    shown = term.read_until(lambda text: re.search(r"\b[1-9]\d*/12\b", _plain(text)) is not None)
    plain = _plain(shown)
    assert "ranges" in plain and "records" in plain and "ETA" in plain, plain  # the progress bar
    os.killpg(term.process.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    code = term.finish()
    out = _plain(term.seen)
    assert code == 130, out
    (note,) = [line for line in out.splitlines() if line.startswith("interrupted (SIGINT)")]
    done, total = map(int, re.search(r"(\d+) of (\d+) ranges done", note).groups())  # type: ignore[union-attr]
    assert total == 12 and 1 <= done < 12
    assert out.count("not started: interrupted") == 12 - done
    archived = {p.parent.name for p in archive.rglob("records.jsonl.gz")}
    assert len(archived) == done  # what is reported done was done, and nothing else


def test_sigterm_when_piped_exits_143_with_the_summary(
    slow_ranges: Path, proxy: FaultProxy, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "replayer", "replay", str(slow_ranges), "--to", f"file:{tmp_path / 'a'}",
         "--concurrency", "1", "--output", "jsonl", "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(proxy.url), cwd=ROOT, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:  # -v: a log line per range done
        if '"range_done"' in line:
            break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=90)
    assert process.returncode == 143, err
    lines = [json.loads(line) for line in out.splitlines()]
    *ranges, totals = lines
    assert totals["interrupted"] == "SIGTERM" and totals["exit_code"] == 143
    assert len(ranges) == 12 and any(r["outcome"] == "replayed" for r in ranges)
    assert any(r["reason"].startswith("not started: interrupted") for r in ranges)


def test_a_terminal_stdin_gets_a_hint(proxy: FaultProxy) -> None:
    term = Terminal(["replay", "--to", "-"], _env(proxy.url))
    assert "reading invocation records from stdin" in term.read_until(lambda t: "Ctrl-D" in t)
    term.write(b"\x04")  # end of input, as Ctrl-D types it
    code = term.finish()
    assert code == 0
    assert "no invocation records found in <stdin>" in _plain(term.seen)


def test_colour_on_a_terminal_and_none_with_no_color(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    table.put(2)
    path = tmp_path / "one.json"
    path.write_text(json.dumps(table.invocation_record(0, 1)))
    args = ["replay", str(path), "--to", f"file:{tmp_path / 'a'}"]
    coloured = Terminal(args, _env(proxy.url))
    assert coloured.finish() == 0
    plain = Terminal(args, _env(proxy.url, NO_COLOR="1"))
    assert plain.finish() == 0
    colour = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])[;m]")  # bold and the like are not colour
    assert colour.search(coloured.seen)  # replayed, in green
    assert not colour.search(plain.seen)
    assert "replayed" in plain.seen


def test_piped_output_is_one_line_per_range_within_100_columns_full_values_in_json(
    table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    table.put(6)
    records = table.stream_records()
    ranges = [table.invocation_record(0, 2, records), table.invocation_record(3, 5, records)]
    path = tmp_path / "two.json"
    path.write_text(json.dumps(ranges))
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / "archive"  # longer than any terminal
    args = [sys.executable, "-m", "replayer", "replay", str(path), "--to", f"file:{deep}"]
    result = subprocess.run(
        [*args, "-v"], capture_output=True, text=True, env=_env(proxy.url, COLUMNS="100"), cwd=ROOT, timeout=120
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["outcome", "range", "records", "stream", "shard", "where", "/", "why"]
    rows = lines[1:3]
    assert len(rows) == 2 and lines[3] == "2 replayed; 6 records recovered"
    assert all(len(line) <= 100 for line in lines), [len(line) for line in lines]
    for row in rows:
        assert row.startswith("replayed") and re.search(
            r"\b[0-9a-f]{8}\b", row
        )  # redrive --range-id takes it
        assert f" {table.name[:11]}" in row and "arn:aws" not in row  # the stream by its name (cut at 12)
        assert row.endswith("…")  # the long folder cut to fit, never wrapped
    assert "--json shows every value whole" in result.stdout
    assert "{" not in result.stdout  # the JSON log lines (-v) went to stderr only
    assert '"range_done"' in result.stderr
    assert "\x1b[" not in result.stdout
    whole = subprocess.run(
        [*args, "--json"], capture_output=True, text=True, env=_env(proxy.url, COLUMNS="100"), cwd=ROOT, timeout=120
    )  # fmt: skip
    described = json.loads(whole.stdout)["ranges"]
    assert {r["range"]["stream_arn"] for r in described} == {table.stream_arn}
    assert all(len(r["range"]["range_id"]) == 32 for r in described)
    assert any(str(deep) in r["delivered_to"][0] or str(deep) in (r["report"] or "") for r in described)
    rerun = subprocess.run(args, capture_output=True, text=True, env=_env(proxy.url, COLUMNS="100"), cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr
    assert (
        "2 replayed; 6 records recovered (2 of the ranges already archived: nothing new written)"
        in rerun.stdout
    )
    assert rerun.stdout.count("already archived in ") == 2  # a rerun that found everything says so


def test_a_cell_is_one_line_and_the_wording_matches_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.delenv("COLUMNS", raising=False)  # not a terminal, no COLUMNS: 100 columns

    from rich.console import Console

    from replayer.model import Outcome, OutcomeKind
    from replayer.parse import parse_message
    from replayer.report import Report, render
    from tests.support.events import load_event

    (failure,) = parse_message(load_event("ddb_esm_sqs_record.json"))
    html = "<html>\n<body>\n  <h1>502 Bad Gateway</h1>\n</body>\n</html>\n" * 20
    outcomes = [
        Outcome(OutcomeKind.RETRY, failure, recovered=3, reason=f"reading the stream failed: {html}"),
        Outcome(OutcomeKind.PLANNED, failure, recovered=2, reason="would read 3 records, send 2 of 3"),
    ]
    out = io.StringIO()
    console = Console(file=out, width=100_000, soft_wrap=True)
    render(Report(outcomes), output="table", out=out, console=console, notes=console)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 2 + 2  # header, a line per range, the count line, the note
    assert all(len(line) <= 100 for line in lines) and "failed: <html> <body> <h1>502 Bad" in lines[1]
    assert " mytable " in lines[1] and "arn:aws" not in out.getvalue()
    assert lines[3] == "1 planned, 1 retry; would send 2 records; dry run: nothing was written"
    out = io.StringIO()
    render(
        Report(outcomes[:1]), output="table", out=out, console=Console(file=out, width=100_000), notes=console
    )
    assert "; 0 records recovered" in out.getvalue()  # read but not delivered: not recovered


def test_drain_interrupted_by_sigterm_exits_143_and_names_what_it_released(
    table: DynamoTable, proxy: FaultProxy, moto_endpoint: str, tmp_path: Path
) -> None:
    table.put(12)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, *[table.invocation_record(2 * i, 2 * i + 1, records) for i in range(6)])
    proxy.add(Rule(op("GetShardIterator"), delay=1.0))
    process = subprocess.Popen(
        [sys.executable, "-m", "replayer", "drain", "--queue", queue, "--to", f"file:{tmp_path}",
         "--allow-stream", table.stream_arn, "--concurrency", "1", "--wait-seconds", "1", "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(proxy.url), cwd=ROOT, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if '"range_done"' in line:
            break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=90)
    assert process.returncode == 143, err
    (summary,) = [line for line in out.splitlines() if line.startswith("messages: ")]
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (\w+)", summary.split("messages:")[1]))
    assert counts["deleted"] >= 1 and counts["received"] == counts["deleted"] + counts["released"]
    assert "interrupted (SIGTERM): no new message was taken" in out
    visible, _ = queue_counts(moto_endpoint, queue)
    assert visible + counts["deleted"] == 6  # what was not done is back on the queue, nothing lost
