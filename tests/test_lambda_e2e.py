"""The Lambda deployment end to end, the way it runs in AWS: `make package`'s zip, deployed, fed by a stream.

What runs where (all of it in one ministack started here: no Docker, no moto):
- the artefact: ``make package`` for this machine's Python and platform (the zip that
  deploy/template.yaml's CodeUri points at), uploaded to S3 and deployed from there as the
  replayer function, with the template's handler, environment and SQS trigger settings;
- ministack runs with an interpreter that holds ministack and its own dependencies only (no
  replayer, aioboto3, boto3, botocore, ...), and its Lambda workers run with that same
  interpreter: the function can only work from what the zip holds;
- a DynamoDB table with a stream, read by a consumer function (tests/lambdas/stream_consumer)
  through ministack's DynamoDB stream event source mapping; the consumer fails every batch
  holding a poison item. Ministack's mapping has no retry-count limit: it gives up on a batch
  once its oldest record is older than MaximumRecordAgeInSeconds (1 s here; AWS requires at
  least 60) and sends the invocation record (condition ``MaxRecordAgeExceeded``, shard id
  ``shardId-00000000000000000000-00000000``) to the failure queue. Ministack's DynamoDB
  Streams API serves that same shard id (DescribeStream lists it, GetShardIterator accepts it),
  so replayer re-reads the range from ministack itself;
- the failure queue (with the template's redrive policy to a dead-letter queue) and an SQS event
  source mapping with ReportBatchItemFailures to the replayer function, which archives the
  range in ministack's S3.

The consumer writes what it received (and whether it failed) to a local folder: the test
knows exactly which records Lambda gave up on, and checks the archive holds those and only those.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from botocore.exceptions import ClientError
from cfnlint.decode import cfn_yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from replayer import DISTRIBUTION
from replayer.model import OutcomeKind
from tests.support import ROOT
from tests.support.aws import create_stream_table
from tests.support.ministack import LAMBDAS, Ministack, start_ministack, stop_ministack

TEMPLATE = ROOT / "deploy" / "template.yaml"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
PLATFORM = f"manylinux2014_{platform.machine()}"
MINISTACK_SHARD = "shardId-00000000000000000000-00000000"
PREFIX = "replayer"
T = TypeVar("T")


def load_packager() -> ModuleType:
    """deploy/package.py (not a package): the code `make package` runs."""
    spec = importlib.util.spec_from_file_location("replayer_deploy_package", ROOT / "deploy" / "package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def template() -> dict[str, Any]:
    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return loaded


def wait_for(
    check: Callable[[], T], what: str, *, diagnose: Callable[[], str] = str, timeout: float = 90
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` (and what `diagnose` tells) if not.

    The deadline only bounds a hung emulator: nothing here asserts how fast anything is.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}\n{diagnose()}")
        time.sleep(0.25)


# ---- the artefact


@dataclass(frozen=True)
class Built:
    zip: Path
    output: str  # what `make package` printed


def make_env() -> dict[str, str]:
    """This environment less the outer make's variables (under `make test`) and the package target's own."""
    ours = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PLATFORM", "PYTHON", "LAMBDA_ZIP")
    return {k: v for k, v in os.environ.items() if k not in ours}


@pytest.fixture(scope="module")
def artefact(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`make package`, for this interpreter and platform (pip reuses its wheel cache)."""
    out = tmp_path_factory.mktemp("package") / "replayer-lambda.zip"
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "package",
            f"PYTHON={PYTHON}",
            f"PLATFORM={PLATFORM}",
            f"LAMBDA_ZIP={out}",
        ],
        cwd=ROOT,
        env=make_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return Built(out, done.stdout)


def runtime_closure(name: str, requires: Callable[[str], list[str]]) -> set[str]:
    """The distributions `name` needs at run time (its extras: none; a requirement's extras: followed)."""
    found: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset())]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        key, extras = todo.pop()
        if (key, extras) in done:
            continue
        done.add((key, extras))
        found.add(key)
        for text in requires(key):
            requirement = Requirement(text)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
            )
            if wanted:
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


def installed_requires(name: str) -> list[str]:
    return metadata.requires(name) or []


def test_make_package_builds_the_runtime_closure_only(artefact: Built) -> None:
    assert re.search(r"\d+\.\d MiB zipped \(\d+ bytes\)", artefact.output), artefact.output
    assert f"python {PYTHON}, {PLATFORM}" in artefact.output
    with zipfile.ZipFile(artefact.zip) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        records = {n: z.read(n).decode() for n in names if n.endswith(".dist-info/RECORD")}
        metadata_files = [z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA")]
    assert "replayer/lambda_handler.py" in names and "replayer/sources/lambda_.py" in names
    # Exactly replayer's runtime dependencies (by the zip's own metadata), at the constraints' versions.
    shipped: dict[str, tuple[str, list[str]]] = {}
    for text in metadata_files:
        fields = [line.split(": ", 1) for line in text.splitlines() if ": " in line]
        name = canonicalize_name(next(v for k, v in fields if k == "Name"))
        shipped[name] = (
            next(v for k, v in fields if k == "Version"),
            [v for k, v in fields if k == "Requires-Dist"],
        )
    # The handler never imports the CLI: what the `cli` extra names stays out of the zip.
    cli = {
        canonicalize_name(Requirement(text).name)
        for text in shipped[DISTRIBUTION][1]
        if "extra" in str(Requirement(text).marker) and Requirement(text).marker.evaluate({"extra": "cli"})
    }
    assert {"typer", "rich"} <= cli

    def lambda_requires(name: str) -> list[str]:
        requires = shipped[name][1]
        return (
            [t for t in requires if canonicalize_name(Requirement(t).name) not in cli]
            if name == DISTRIBUTION
            else requires
        )

    assert set(shipped) == runtime_closure(DISTRIBUTION, lambda_requires)
    assert not {"pytest", "moto", "ministack", "hypothesis", "cfn-lint", "mypy", "ruff"} & set(shipped)
    assert not {"typer", "rich", "pygments", "click"} & set(shipped)
    # botocore: the models of the services replayer calls, no others.
    models = {n.split("/")[2] for n in names if n.startswith("botocore/data/") and n.count("/") > 3}
    assert models == set(load_packager().SERVICES)
    pins: dict[str, str] = dict(
        (canonicalize_name(name), version)
        for name, _, version in (
            line.partition("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
        )
        if version
    )
    assert {name: version for name, (version, _) in shipped.items() if name != DISTRIBUTION} == {
        name: pins[name] for name in shipped if name != DISTRIBUTION
    }
    # Extension modules for this interpreter (the build asked pip for its tags, not the host's).
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}-"
    extensions = [n for n in names if n.endswith(".so")]
    assert extensions and all(tag in n or ".abi3." in n for n in extensions), extensions
    # Byte-code for this runtime's Python only, hash-based (valid whatever the zip's timestamps).
    pyc_tag = f".cpython-{sys.version_info.major}{sys.version_info.minor}.pyc"
    compiled = [n for n in names if n.endswith(".pyc")]
    assert "replayer/__pycache__/lambda_handler" + pyc_tag in compiled
    assert all(n.endswith(pyc_tag) and "__pycache__/" in n for n in compiled)
    with zipfile.ZipFile(artefact.zip) as z:
        assert {int.from_bytes(z.read(n)[4:8], "little") for n in compiled} == {0b01}  # unchecked hash
    # Nothing that differs between build machines, nothing Lambda never runs.
    assert not [n for n in names if n.startswith("bin/")]
    assert not [n for n in names if n.endswith("direct_url.json")]
    for record, text in records.items():
        listed = [line.rsplit(",", 2)[0] for line in text.splitlines() if line]
        assert set(listed) <= set(names), record
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_the_zip_keeps_the_model_of_every_service_the_code_calls() -> None:
    """`make package` drops botocore's other models: a client for a dropped one fails only in Lambda."""
    named = set()
    for path in (ROOT / "replayer").rglob("*.py"):
        named |= set(re.findall(r"""clients\.get\(\s*["']([a-z0-9-]+)["']""", path.read_text()))
    assert {"dynamodbstreams", "kinesis", "s3", "sqs"} <= named
    assert named <= set(load_packager().SERVICES)


def test_the_zip_is_a_function_of_its_contents(artefact: Built, tmp_path: Path) -> None:
    """Re-zipping the same files (same modes), extracted at other times in another order, gives the same bytes."""
    packager = load_packager()
    site = tmp_path / "site"
    shuffle = random.Random(7)
    with zipfile.ZipFile(artefact.zip) as z:
        infos = z.infolist()
        shuffle.shuffle(infos)
        for info in infos:
            path = Path(z.extract(info, site))
            path.chmod(info.external_attr >> 16 & 0o777)
            moment = shuffle.randint(1_000_000_000, 1_900_000_000)
            os.utime(path, (moment, moment))
    again = tmp_path / "again.zip"
    packager._zip(site, again)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(artefact.zip.read_bytes()).digest()


def test_make_package_defaults_match_the_template() -> None:
    packager = load_packager()
    function = template()["Resources"]["ReplayerFunction"]["Properties"]
    assert (TEMPLATE.parent / function["CodeUri"]).resolve() == packager.DEFAULT_OUTPUT
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "package"],
        cwd=ROOT,
        env=make_env(),
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert f"--python-version {function['Runtime'].removeprefix('python')}" in dry.stdout
    assert "--platform manylinux2014_x86_64" in dry.stdout and function["Architectures"] == [
        {"Ref": "Architecture"}
    ]
    assert "--output deploy/build/replayer-lambda.zip" in dry.stdout
    arm = subprocess.run(
        ["make", "--no-print-directory", "-n", "package", "PLATFORM=manylinux2014_aarch64", "PYTHON=3.13"],
        cwd=ROOT,
        env=make_env(),
        capture_output=True,
        text=True,
    )
    assert "--platform manylinux2014_aarch64 --python-version 3.13" in arm.stdout


# ---- the operations part of the template


def emf_metric_names() -> set[str]:
    """Every metric name the handler can emit (`observe.emf.flush` over the recorder's tally)."""
    from replayer.observe import MESSAGE_EVENTS
    from replayer.observe.emf import metric_name
    from replayer.sinks.guard import COUNTS as REDRIVE_COUNTS

    counts = [f"messages_{e}" for e in MESSAGE_EVENTS]
    counts += [f"ranges_{kind.value}" for kind in OutcomeKind]
    counts += ["ranges_near_expiry", "records_recovered", "records_lost", "deliveries_already_there"]
    counts += [f"redrive_{name}" for name in REDRIVE_COUNTS]
    watch = {
        "MappingExpiryMarginSeconds",
        "SmallestExpiryMarginSeconds",
        "MappingsAtRisk",
        "AtRiskRecordsArchived",
    }
    return (
        {metric_name(c) for c in counts} | {"ReadSeconds", "SinkSeconds"} | watch
    )  # watch: emf.flush_margins


def test_dashboard_and_alarms_use_the_emitted_metrics() -> None:
    resources = template()["Resources"]
    namespace = resources["ReplayerFunction"]["Properties"]["Environment"]["Variables"]["AWS_EMF_NAMESPACE"]
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    ours = {n: a for n, a in alarms.items() if a["Namespace"] == namespace}
    assert {a["MetricName"] for a in ours.values()} <= emf_metric_names()
    # Any lost or conflicting record alarms; the watch's alarm fires when a mapping's margin is short.
    margin = ours.pop("AtRiskMarginAlarm")
    assert margin["MetricName"] == "SmallestExpiryMarginSeconds" and margin["Statistic"] == "Minimum"
    assert margin["ComparisonOperator"] == "LessThanThreshold"
    assert margin["Threshold"] == {"Ref": "AtRiskMarginSeconds"}
    assert {a["MetricName"] for a in ours.values()} == {"RecordsLost", "RangesConflict"}
    assert all(
        a["Threshold"] == 0 and a["ComparisonOperator"] == "GreaterThanThreshold" for a in ours.values()
    )
    sqs_alarms = {(a["MetricName"], json.dumps(a["Dimensions"][0]["Value"])) for a in alarms.values()}
    assert ("ApproximateAgeOfOldestMessage", '{"Fn::GetAtt": ["FailureQueue", "QueueName"]}') in sqs_alarms
    assert (
        "ApproximateNumberOfMessagesVisible",
        '{"Fn::GetAtt": ["FailureDeadLetterQueue", "QueueName"]}',
    ) in (sqs_alarms)
    assert all("AlarmActions" in a for a in alarms.values())
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "0", body))
    used = {
        m[1]
        for widget in dashboard["widgets"]
        for m in widget["properties"].get("metrics", [])
        if m[0] == namespace
    }
    assert "RecordsLost" in used and used <= emf_metric_names()


# ---- ministack without replayer


def interpreter_with_only(where: Path, distribution: str) -> Path:
    """A virtualenv of the base interpreter holding `distribution`'s runtime closure and nothing else.

    The packages are links to this virtualenv's copies: no network, well under a second.
    """
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for name in runtime_closure(distribution, installed_requires):
        dist = metadata.distribution(name)
        tops = {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}
        for top in sorted(tops):
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return python


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ministack]:
    """A ministack (and its Lambda workers) on an interpreter that cannot import replayer or its dependencies."""
    where = tmp_path_factory.mktemp("bare-ministack")
    python = interpreter_with_only(where / "venv", "ministack")
    for module in ("replayer", "aioboto3", "aiobotocore", "boto3", "botocore", "structlog", "orjson"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, cwd=where)
        assert probe.returncode != 0, f"{module} is importable by ministack's interpreter"
    running = start_ministack(where, python=str(python))
    yield running
    stop_ministack(running.process)


# ---- one deployment, shaped like deploy/template.yaml


class Deployment:
    """The template's queues and replayer function (from the artefact), and a failing stream consumer."""

    def __init__(self, ms: Ministack, artefact: Path, calls: Path, archive_bucket: str) -> None:
        self.ms = ms
        self.tag = uuid.uuid4().hex[:8]
        self.sqs = ms.client("sqs")
        self.lam = ms.client("lambda")
        self.s3 = ms.client("s3")
        self.ddb = ms.client("dynamodb")
        self.archive_bucket = archive_bucket
        self.calls = calls
        self.esms: list[str] = []
        resources = template()["Resources"]
        parameters = template()["Parameters"]

        self.dlq_url, dlq_arn = self._queue(f"failures-dlq-{self.tag}", {})
        redrive = {
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": str(parameters["MaxReceiveCount"]["Default"]),
        }
        self.queue_url, self.queue_arn = self._queue(
            f"failures-{self.tag}", {"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(redrive)}
        )
        self.quarantine_url, _ = self._queue(f"quarantine-{self.tag}", {})

        self.table = f"orders-{self.tag}"
        self.stream_arn: str = create_stream_table(self.ddb, self.table)["LatestStreamArn"]

        # The code goes through S3, as `sam deploy` sends it.
        code_bucket = f"code-{self.tag}"
        self.s3.create_bucket(Bucket=code_bucket)
        code = artefact.read_bytes()
        self.s3.put_object(Bucket=code_bucket, Key="replayer-lambda.zip", Body=code)
        function = resources["ReplayerFunction"]["Properties"]
        env = {k: v for k, v in function["Environment"]["Variables"].items() if isinstance(v, str)}
        env |= {
            "REPLAYER_TO": f"s3://{archive_bucket}/{PREFIX}",
            "REPLAYER_ALLOW_STREAMS": self.stream_arn,
            "REPLAYER_QUARANTINE": self.quarantine_url,
            "REPLAYER_RETRY_BASE_SECONDS": "1",  # retried messages come back in seconds, not minutes
            "REPLAYER_RETRY_MAX_SECONDS": "2",
            "REPLAYER_SAFETY_MARGIN_SECONDS": "10",
        }
        self.function = f"replayer-{self.tag}"
        deployed = self.lam.create_function(
            FunctionName=self.function,
            Runtime=f"python{PYTHON}",  # what the zip was built for (the template says python3.12)
            Role="arn:aws:iam::000000000000:role/replayer",
            Handler=function["Handler"],
            Code={"S3Bucket": code_bucket, "S3Key": "replayer-lambda.zip"},
            Timeout=60,
            MemorySize=function["MemorySize"],
            Environment={"Variables": env},
        )
        assert deployed["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()
        ms.wait_active(self.function)
        trigger = function["Events"]["FailureRecords"]["Properties"]
        self.sqs_esm = self._esm(
            EventSourceArn=self.queue_arn,
            FunctionName=self.function,
            BatchSize=trigger["BatchSize"],
            FunctionResponseTypes=trigger["FunctionResponseTypes"],
        )
        self.consumer = ms.deploy(
            f"consumer-{self.tag}", LAMBDAS / "stream_consumer", "handler.handler", {"CALLS_DIR": str(calls)}
        )

    def _queue(self, name: str, attributes: dict[str, str]) -> tuple[str, str]:
        url: str = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn: str = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return url, arn

    def _esm(self, **settings: Any) -> str:
        uuid_: str = self.lam.create_event_source_mapping(**settings)["UUID"]
        self.esms.append(uuid_)
        return uuid_

    def put(self, n: int, *, poison: set[int]) -> None:
        for i in range(n):
            item: dict[str, dict[str, Any]] = {"pk": {"S": f"item-{i}"}, "n": {"N": str(i)}}
            if i in poison:
                item["poison"] = {"BOOL": True}
            self.ddb.put_item(TableName=self.table, Item=item)

    def start_consumer(self) -> None:
        """The consumer's stream mapping, from the start: batches of two, failures to the failure queue."""
        self._esm(
            EventSourceArn=self.stream_arn,
            FunctionName=self.consumer,
            StartingPosition="TRIM_HORIZON",
            BatchSize=2,
            MaximumRetryAttempts=0,
            MaximumRecordAgeInSeconds=1,
            DestinationConfig={"OnFailure": {"Destination": self.queue_arn}},
        )

    def close(self) -> None:
        for esm in self.esms:
            self.lam.delete_event_source_mapping(UUID=esm)

    # ---- what happened

    def consumer_calls(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.calls.glob("*.json"))]

    def seen(self) -> set[str]:
        """Keys of the items the consumer has been given so far."""
        return {r["dynamodb"]["Keys"]["pk"]["S"] for call in self.consumer_calls() for r in call["records"]}

    def failed_batches(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The batches the consumer failed on, by (first, last) sequence number (retries are the same batch)."""
        batches = {}
        for call in self.consumer_calls():
            if call["failed"]:
                sequences = [r["dynamodb"]["SequenceNumber"] for r in call["records"]]
                batches[(sequences[0], sequences[-1])] = call["records"]
        return batches

    def archive(self) -> dict[str, dict[str, Any]]:
        """Complete archived ranges (their invocation.json is written last), by folder."""
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.archive_bucket, Prefix=f"{PREFIX}/"
            )
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchBucket":
                return {}
            raise
        ranges = {}
        for key in keys:
            folder, _, name = key.rpartition("/")
            if name == "invocation.json":
                ranges[folder] = {
                    "invocation": json.loads(self._read(key)),
                    "keys": {k for k in keys if k.startswith(f"{folder}/")},
                }
                records = f"{folder}/records.jsonl.gz"
                lines = gzip.decompress(self._read(records)).splitlines() if records in keys else []
                ranges[folder]["records"] = [json.loads(line) for line in lines]
        return ranges

    def _read(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.archive_bucket, Key=key)["Body"].read()
        return body

    def depth(self, url: str) -> int:
        """Messages in a queue, visible, in flight or delayed."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(attributes.get(n, 0)) for n in names)

    def metrics(self) -> list[dict[str, Any]]:
        """The function's embedded-metric-format lines, from its CloudWatch log group."""
        logs = self.ms.client("logs")
        try:
            pages = logs.get_paginator("filter_log_events").paginate(
                logGroupName=f"/aws/lambda/{self.function}"
            )
            messages = [e["message"] for page in pages for e in page["events"]]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return []
            raise
        return [json.loads(m) for m in messages if m.startswith("{") and '"_aws"' in m]

    def diagnostics(self) -> str:
        """What to look at when the chain stalls: mappings, queues, the function's log, ministack's log."""
        lines = [f"mapping {esm}: {self.last_result(esm)}" for esm in self.esms]
        lines += [
            f"failure queue {self.depth(self.queue_url)}, dead letters {self.depth(self.dlq_url)}",
            f"consumer calls: {[(c['failed'], len(c['records'])) for c in self.consumer_calls()]}",
            f"archived ranges: {sorted(self.archive())}",
        ]
        logs = self.ms.client("logs")
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{self.function}")["events"]
        except ClientError as exc:
            events = [{"message": str(exc)}]
        lines += ["replayer function log (last 40 lines):", *[e["message"][:500] for e in events[-40:]]]
        lines += ["ministack log (end):", self.ms.log.read_text(errors="replace")[-3000:]]
        return "\n".join(lines)

    def metrics_once(self, *, deleted: int) -> list[dict[str, Any]]:
        """The function's metric lines, once they count `deleted` deleted messages."""

        def check() -> list[dict[str, Any]]:
            metrics = self.metrics()
            return metrics if total(metrics, "MessagesDeleted") == deleted else []

        return wait_for(check, f"metrics of {deleted} deleted messages", diagnose=self.diagnostics)

    def last_result(self, esm: str) -> str:
        result: str = self.lam.get_event_source_mapping(UUID=esm).get("LastProcessingResult", "")
        return result

    def settled(self, items: int) -> bool:
        """Every item seen by the consumer, every failed batch archived, the failure queue empty."""
        failed = self.failed_batches()
        return (
            len(self.seen()) == items
            and bool(failed)
            and len(self.archive()) == len(failed)
            and self.depth(self.queue_url) == 0
        )


def total(metrics: list[dict[str, Any]], name: str) -> int:
    return sum(int(m.get(name, 0)) for m in metrics)


def without_source(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "eventSourceARN"}


def assert_archived_exactly_the_failed_records(deployment: Deployment) -> None:
    failed = deployment.failed_batches()
    archive = deployment.archive()
    by_range = {}
    for folder, archived in archive.items():
        info = archived["invocation"]["invocation_record"]["DDBStreamBatchInfo"]
        assert info["shardId"] == MINISTACK_SHARD and info["streamArn"] == deployment.stream_arn
        assert (
            archived["invocation"]["invocation_record"]["requestContext"]["functionArn"]
            == deployment.consumer
        )
        assert archived["keys"] == {
            f"{folder}/invocation.json",
            f"{folder}/records.jsonl.gz",
        }  # no loss report
        by_range[(info["startSequenceNumber"], info["endSequenceNumber"])] = archived["records"]
    assert set(by_range) == set(failed)
    for batch, records in failed.items():
        # The records Lambda would have sent: what the consumer got, field for field, except that
        # ministack labels each record's eventSourceARN with the time it was written (a quirk: its
        # own stream ARN is the table's LatestStreamArn, which replayer, like AWS, puts there).
        assert [r["eventSourceARN"] for r in by_range[batch]] == [deployment.stream_arn] * len(records)
        assert [without_source(r) for r in by_range[batch]] == [without_source(r) for r in records]
    archived_items = {r["dynamodb"]["Keys"]["pk"]["S"] for records in by_range.values() for r in records}
    assert archived_items < deployment.seen()  # the batches that succeeded stay out


# ---- the two cases


@pytest.fixture
def deployment_factory(
    bare: Ministack, artefact: Built, tmp_path: Path
) -> Iterator[Callable[[str], Deployment]]:
    made: list[Deployment] = []

    def make(archive_bucket: str) -> Deployment:
        calls = tmp_path / f"calls-{len(made)}"
        calls.mkdir()
        made.append(Deployment(bare, artefact.zip, calls, archive_bucket))
        return made[-1]

    yield make
    for deployment in made:
        deployment.close()


def test_discarded_stream_records_are_archived_and_the_queue_drains(
    bare: Ministack, deployment_factory: Callable[[str], Deployment]
) -> None:
    archive_bucket = f"archive-{uuid.uuid4().hex[:8]}"
    bare.client("s3").create_bucket(Bucket=archive_bucket)
    deployment = deployment_factory(archive_bucket)
    shards = bare.client("dynamodbstreams").describe_stream(StreamArn=deployment.stream_arn)
    assert [s["ShardId"] for s in shards["StreamDescription"]["Shards"]] == [MINISTACK_SHARD]
    deployment.put(8, poison={3, 6})  # batches of two: [2, 3] and [6, 7] fail, [0, 1] and [4, 5] pass
    deployment.start_consumer()

    wait_for(
        lambda: deployment.settled(8),
        "every failed batch archived and the failure queue empty",
        diagnose=deployment.diagnostics,
    )

    assert_archived_exactly_the_failed_records(deployment)
    assert {r["dynamodb"]["Keys"]["pk"]["S"] for b in deployment.failed_batches().values() for r in b} == {
        "item-2", "item-3", "item-6", "item-7"
    }  # fmt: skip
    assert deployment.depth(deployment.dlq_url) == 0
    assert deployment.depth(deployment.quarantine_url) == 0
    metrics = deployment.metrics_once(deleted=2)
    assert total(metrics, "RecordsRecovered") == 4
    assert total(metrics, "MessagesRetried") == 0
    # What the template's records-lost alarm watches is emitted, with its dimension, even at zero.
    lost = [m for m in metrics if "RecordsLost" in m]
    assert lost and total(lost, "RecordsLost") == 0
    for line in lost:
        (definition,) = line["_aws"]["CloudWatchMetrics"]
        assert definition["Namespace"] == "replayer" and definition["Dimensions"] == [["EventSource"]]
        assert line["EventSource"] == "aws:sqs"
    assert "partial failures" not in deployment.last_result(deployment.sqs_esm)


def test_an_unwritable_archive_sends_the_messages_back_until_it_can_be_written(
    bare: Ministack, deployment_factory: Callable[[str], Deployment]
) -> None:
    archive_bucket = f"archive-late-{uuid.uuid4().hex[:8]}"  # created only later
    deployment = deployment_factory(archive_bucket)
    deployment.put(4, poison={1})  # [0, 1] fails, [2, 3] passes: one failure record
    deployment.start_consumer()

    # The message came back after a partial batch response, and was answered the same way again.
    wait_for(
        lambda: len([m for m in deployment.metrics() if m.get("MessagesRetried")]) >= 2,
        "two invocations that sent the failure record back",
        diagnose=deployment.diagnostics,
    )
    assert "partial failures" in deployment.last_result(deployment.sqs_esm)  # answered, not crashed
    assert deployment.depth(deployment.queue_url) == 1
    assert deployment.depth(deployment.dlq_url) == 0
    assert deployment.archive() == {}

    bare.client("s3").create_bucket(Bucket=archive_bucket)
    wait_for(
        lambda: deployment.settled(4),
        "the failed batch archived once the bucket exists, the queue empty",
        diagnose=deployment.diagnostics,
    )

    assert_archived_exactly_the_failed_records(deployment)
    assert len(deployment.failed_batches()) == 1
    assert deployment.depth(deployment.dlq_url) == 0
    metrics = deployment.metrics_once(deleted=1)
    assert total(metrics, "MessagesRetried") >= 2
    assert total(metrics, "RecordsRecovered") == 2 and total(metrics, "RecordsLost") == 0
