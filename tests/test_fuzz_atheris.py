"""Coverage-guided fuzzing of the parser with atheris, bounded in time and runs: only ParseError escapes.

tests/test_parse_fuzz.py does the same with hypothesis; this adds libFuzzer's coverage
guidance, seeded with every sample record and hostile case. The fuzzer runs in its own
process (libFuzzer exits the process when done), on a copy of the seeds. Skipped when
atheris is not installed (it ships wheels for Linux only).

Reproduce or fuzz longer: FUZZ_SECONDS=300 .venv/bin/pytest tests/test_fuzz_atheris.py -s
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.events import sample_paths
from tests.support.faultproxy import record_proof
from tests.support.hostile import CASES

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris; Linux wheels only)")

SECONDS = int(os.environ.get("FUZZ_SECONDS", "3"))
RUNS = int(os.environ.get("FUZZ_RUNS", "5000000"))

TARGET = r'''
import json
import sys

import atheris

with atheris.instrument_imports():
    from replayer.errors import ParseError
    from replayer.parse import parse_document, parse_message, parse_record, s3_object_refs, sqs_messages

SCALARS = [None, True, 0, -1, 10**30, 1.5, "", "..", "../../x", "shardId-0", "\x00", "\ud800",
           "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/s", "800000000003126276362", [], {}]


def mutate(document, fdp):
    """Replace one value somewhere in a decoded seed (structure-aware: reaches past the JSON check)."""
    node = document
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        if isinstance(node, dict) and node:
            keys = sorted(node)
            key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
            if fdp.ConsumeBool() or not isinstance(node[key], (dict, list)):
                choice = fdp.ConsumeIntInRange(0, len(SCALARS))
                node[key] = SCALARS[choice] if choice < len(SCALARS) else fdp.ConsumeUnicode(40)
                return document
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[fdp.ConsumeIntInRange(0, len(node) - 1)]
    return document


def one(data):
    if not data:
        return
    mode, rest = data[0] % 6, data[1:]  # the first byte picks the entry point; the rest is the input
    try:
        if mode == 0:
            parse_message(rest)
        elif mode == 1:
            parse_document(rest)
        else:
            try:
                document = json.loads(rest)
            except (ValueError, RecursionError):
                return
            document = mutate(document, atheris.FuzzedDataProvider(rest[::-1]))
            if mode == 2:
                parse_message(document)
            elif mode == 3:
                parse_record(document)
            elif mode == 4:
                sqs_messages(document)
            else:
                s3_object_refs(document)
    except ParseError:
        pass


atheris.Setup(sys.argv, one)
atheris.Fuzz()
'''


def test_the_parser_raises_only_parse_errors_under_coverage_guided_fuzzing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = sample_paths()
    for i, path in enumerate(seeds):
        # Mode byte first (see `one`): each seed is tried as text and as a decoded document.
        for mode in (0, 2):
            (corpus / f"sample-{i}-{mode}").write_bytes(bytes([mode]) + path.read_bytes())
    for i, case in enumerate(c for c in CASES if len(c["body_text"]) < 4096):
        (corpus / f"hostile-{i}").write_bytes(b"\x00" + case["body_text"].encode("utf-8", "surrogatepass"))
    seeds_count = len(list(corpus.iterdir()))
    target = tmp_path / "fuzz_parser.py"
    target.write_text(TARGET)
    done = subprocess.run(
        [
            sys.executable, str(target), f"-max_total_time={SECONDS}", f"-runs={RUNS}", "-seed=6",
            "-max_len=4096", "-rss_limit_mb=1024", "-timeout=10", str(corpus),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]  # an escaped exception prints its traceback and fails
    runs = re.search(r"Done (\d+) runs in (\d+) second", output)
    assert runs is not None, output[-2000:]
    assert int(runs.group(1)) > 1000
    cov = re.search(r"DONE\s+cov: (\d+)", output)
    record_proof(
        "fuzz-atheris",
        {
            "seconds": int(runs.group(2)),
            "inputs_tried": int(runs.group(1)),
            "seeds": seeds_count,
            "coverage_edges": int(cov.group(1)) if cov else None,
            "escaped_exceptions": 0,
        },
    )
