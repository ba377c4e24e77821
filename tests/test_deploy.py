"""deploy/ and the Dockerfile: cfn-lint, least-privilege IAM, and the image's install and entrypoint, minus Docker."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from replayer import DISTRIBUTION
from tests.support import ROOT
from tests.support.aws import make_queue
from tests.support.net import free_port, http_get
from tests.support.wheels import source_copy, venv_with

SAM = ROOT / "deploy" / "template.yaml"
ECS = ROOT / "deploy" / "ecs" / "service.yaml"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent

# What replayer needs, per statement: the same in the Lambda role and the ECS task role.
EXPECTED_ACTIONS = {
    "ReadDynamoDBStreams": {"dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"},
    "ReadKinesisStreams": {
        "kinesis:DescribeStreamSummary",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "kinesis:ListShards",
    },
    "WriteArchive": {"s3:PutObject", "s3:GetObject"},
    "InvokeRepairFunction": {"lambda:InvokeFunction"},
    "ConsumeFailureQueue": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    },
    "Quarantine": {"sqs:SendMessage"},
    # The event source mapping (or pipe) whose filter decides what a repair function gets (#16).
    "FindTheMapping": {"lambda:ListEventSourceMappings"},
    "ReadTheMapping": {"lambda:GetEventSourceMapping", "pipes:DescribePipe"},
    # invokeIdentityArn of re-driven and archived records (sinks/_identity.py).
    "LookUpFunctions": {"lambda:GetFunctionConfiguration"},
}


def load(path: Path) -> dict[str, Any]:
    template: dict[str, Any] = cfn_yaml.load(str(path))
    return template


def statements(template: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    """The role's policy statements by Sid; a statement under Fn::If counts as its true branch."""
    found: dict[str, dict[str, Any]] = {}
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                statement = statement["Fn::If"][1]
            found[statement["Sid"]] = statement
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def refs(value: Any) -> set[str]:
    """Every parameter or resource a (possibly intrinsic) value refers to."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {value["Fn::GetAtt"][0]}
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            return {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
        return set().union(*(refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(refs(v) for v in value))
    return set()


@pytest.mark.parametrize("path", [SAM, ECS], ids=["sam", "ecs"])
def test_cfn_lint_passes(path: Path) -> None:
    done = subprocess.run([str(BIN / "cfn-lint"), str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cfn_lint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(SAM.read_text().replace("MemorySize: 1024", "MemorySize: 64"))
    done = subprocess.run([str(BIN / "cfn-lint"), str(broken)], capture_output=True, text=True)
    assert done.returncode != 0 and "E3034" in done.stdout


# Actions AWS authorizes only on "*" (no resource-level permissions): alone in their statements.
UNSCOPABLE = {"lambda:ListEventSourceMappings", "cloudwatch:GetMetricData"}


@pytest.mark.parametrize(("path", "role"), [(SAM, "ReplayerRole"), (ECS, "TaskRole")], ids=["sam", "ecs"])
def test_iam_is_least_privilege(path: Path, role: str) -> None:
    found = statements(load(path), role)
    for sid, statement in found.items():
        assert statement["Effect"] == "Allow"
        assert all("*" not in action for action in as_list(statement["Action"])), sid
        if set(as_list(statement["Action"])) - UNSCOPABLE:
            assert all(resource != "*" for resource in as_list(statement["Resource"])), sid
        if sid in EXPECTED_ACTIONS:
            assert set(as_list(statement["Action"])) == EXPECTED_ACTIONS[sid], sid
    assert set(EXPECTED_ACTIONS) <= set(found)
    # Streams: only the allowed ARNs (the same parameter feeds REPLAYER_ALLOW_STREAMS).
    assert refs(found["ReadDynamoDBStreams"]["Resource"]) == {"DynamoDBStreamArns"}
    assert refs(found["ReadKinesisStreams"]["Resource"]) == {"KinesisStreamArns"}
    # The archive: objects under the prefix only, no bucket-wide or delete rights.
    archive = found["WriteArchive"]["Resource"]["Fn::Sub"]
    assert archive.endswith(":s3:::${ArchiveBucketName}/${ArchivePrefix}/*")
    assert refs(found["InvokeRepairFunction"]["Resource"]) == {"RepairFunctionArn"}
    consume = refs(found["ConsumeFailureQueue"]["Resource"])
    assert consume in ({"FailureQueue"}, {"FailureQueueArn"})
    assert refs(found["Quarantine"]["Resource"]) in ({"QuarantineQueue"}, {"QuarantineQueueArn"})
    # Mappings, pipes and functions of the stack's own account and region only.
    for sid in ("ReadTheMapping", "LookUpFunctions"):
        assert refs(found[sid]["Resource"]) == {"AWS::Partition", "AWS::Region", "AWS::AccountId"}, sid


def test_sam_function_and_queues() -> None:
    template = load(SAM)
    resources = template["Resources"]
    function = resources["ReplayerFunction"]["Properties"]
    assert function["Handler"] == "replayer.lambda_handler.handler"
    assert function["Runtime"] == "python3.12"
    assert refs(function["Role"]) == {"ReplayerRole"}  # no SAM-added managed policies (they use "*")
    trigger = function["Events"]["FailureRecords"]
    assert trigger["Type"] == "SQS"
    assert trigger["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert refs(trigger["Properties"]["Queue"]) == {"FailureQueue"}
    redrive = resources["FailureQueue"]["Properties"]["RedrivePolicy"]
    assert refs(redrive["deadLetterTargetArn"]) == {"FailureDeadLetterQueue"}
    assert resources["FailureDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    variables = function["Environment"]["Variables"]
    assert {"REPLAYER_TO", "REPLAYER_ALLOW_STREAMS", "REPLAYER_QUARANTINE"} <= set(variables)
    assert refs(variables["REPLAYER_ALLOW_STREAMS"]) == {
        "DynamoDBStreamArns",
        "KinesisStreamArns",
        "KafkaClusterArns",
        "SelfManagedKafkaSources",
    }
    # The queue stays invisible longer than a function can run on it.
    assert resources["FailureQueue"]["Properties"]["VisibilityTimeout"] >= 6 * function["Timeout"]


def test_sam_caps_the_sqs_trigger_concurrency() -> None:
    template = load(SAM)
    trigger = template["Resources"]["ReplayerFunction"]["Properties"]["Events"]["FailureRecords"]
    assert trigger["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "MaximumConcurrency"}
    parameter = template["Parameters"]["MaximumConcurrency"]
    assert (parameter["MinValue"], parameter["MaxValue"]) == (2, 1000)  # what Lambda's ScalingConfig accepts
    assert "shard" in parameter["Description"]


def test_sam_other_accounts_use_one_role_name_and_may_assume_only_it() -> None:
    """CrossAccountRoleName feeds REPLAYER_ASSUME_ROLES (an {account} template) and the one sts:AssumeRole grant."""
    from replayer.aws import AssumeRoles
    from replayer.sources.lambda_ import settings_from_env

    template = load(SAM)
    variables = template["Resources"]["ReplayerFunction"]["Properties"]["Environment"]["Variables"]
    condition, when_set, when_empty = variables["REPLAYER_ASSUME_ROLES"]["Fn::If"]
    assert (condition, when_empty) == ("HasCrossAccountRole", "")
    rendered = (
        when_set["Fn::Sub"]
        .replace("${AWS::Partition}", "aws")
        .replace("${CrossAccountRoleName}", "replayer-reader")
    )
    grant = statements(template, "ReplayerRole")["ReadOtherAccounts"]
    allowed = {"REPLAYER_ALLOW_STREAMS": "*"}
    assert grant["Action"] == "sts:AssumeRole"
    assert grant["Resource"]["Fn::Sub"].endswith(":iam::*:role/${CrossAccountRoleName}")
    settings = settings_from_env({"REPLAYER_TO": "s3://bucket", "REPLAYER_ASSUME_ROLES": rendered, **allowed})
    roles = AssumeRoles.of(settings.assume_roles)
    assert roles.role_for("222233334444", "111122223333") == "arn:aws:iam::222233334444:role/replayer-reader"
    assert roles.role_for("111122223333", "111122223333") is None  # our own account: default credentials
    unset = settings_from_env({"REPLAYER_TO": "s3://bucket", "REPLAYER_ASSUME_ROLES": when_empty, **allowed})
    assert unset.assume_roles == ()


def test_sam_alarms_on_conflicts_from_both_event_sources() -> None:
    """A conflicting archive (#11) is never silent: its EMF count is alarmed on, from the queue and from S3."""
    from replayer.model import OutcomeKind
    from replayer.observe.emf import metric_name

    name = metric_name(f"ranges_{OutcomeKind.CONFLICT.value}")
    alarms = [
        r["Properties"] for r in load(SAM)["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    sources = {a["Dimensions"][0]["Value"] for a in alarms if a.get("MetricName") == name}
    assert sources == {"aws:sqs", "aws:s3"}


# What rewrites or removes an object: the archive's Deny covers each of them.
ARCHIVE_WRITES = {
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
    "s3:RestoreObject",
}


@pytest.mark.parametrize(("path", "role"), [(SAM, "ReplayerRole"), (ECS, "TaskRole")], ids=["sam", "ecs"])
def test_only_replayers_role_may_write_under_the_archive_prefix(path: Path, role: str) -> None:
    """Without a manifest key the archive prefix is trusted storage (#21): the template makes it so."""
    template = load(path)
    policy = template["Resources"]["ArchiveWritePolicy"]
    assert policy["Type"] == "AWS::S3::BucketPolicy" and policy["Condition"] == "ManagesArchivePolicy"
    assert template["Parameters"]["ManageArchiveBucketPolicy"]["Default"] == "true"  # on unless turned off
    assert refs(policy["Properties"]["Bucket"]) == {"ArchiveBucketName"}
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert set(as_list(deny["Action"])) == ARCHIVE_WRITES
    # The very objects the role may write: the prefix, not the bucket.
    assert deny["Resource"] == statements(template, role)["WriteArchive"]["Resource"]
    (test,) = deny["Condition"]
    assert test == "ArnNotEquals"
    allowed = deny["Condition"][test]["aws:PrincipalArn"]["Fn::If"]
    assert allowed[0] == "HasArchiveWriters"
    assert allowed[2] == [{"Fn::GetAtt": [role, "Arn"]}]  # by default: replayer's role alone
    assert refs(allowed[1]) == {role, "ArchiveWriters"}


@pytest.mark.parametrize(("path", "role"), [(SAM, "ReplayerRole"), (ECS, "TaskRole")], ids=["sam", "ecs"])
def test_a_manifest_key_is_passed_on_and_may_only_sign_and_verify(path: Path, role: str) -> None:
    template = load(path)
    found = statements(template, role)
    assert set(as_list(found["SignManifests"]["Action"])) == {"kms:GenerateMac", "kms:VerifyMac"}
    assert refs(found["SignManifests"]["Resource"]) == {"ManifestKeyArn"}
    text = path.read_text()
    assert "REPLAYER_MANIFEST_KEY" in text and '!If [HasManifestKey, !Ref ManifestKeyArn, ""]' in text


def test_the_kubernetes_archive_policy_names_the_service_accounts_role_and_the_archive() -> None:
    import json

    import yaml

    folder = ROOT / "deploy" / "kubernetes"
    (deny,) = json.loads((folder / "archive-bucket-policy.json").read_text())["Statement"]
    account = yaml.safe_load((folder / "serviceaccount.yaml").read_text())
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    (deployment,) = [d for d in yaml.safe_load_all((folder / "deployment.yaml").read_text()) if d]
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    archive = next(uri for uri in env["REPLAYER_TO"].split() if uri.startswith("s3://"))
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and set(deny["Action"]) == ARCHIVE_WRITES
    assert deny["Resource"] == f"arn:aws:s3:::{archive.removeprefix('s3://')}/*"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": [role]}}
    assert "archive-bucket-policy.json" in (folder / "kustomization.yaml").read_text()


def test_ecs_task_runs_the_image_like_the_dockerfile() -> None:
    resources = load(ECS)["Resources"]
    task = resources["TaskDefinition"]["Properties"]
    container = task["ContainerDefinitions"][0]
    assert refs(task["TaskRoleArn"]) == {"TaskRole"}
    assert container["User"] != "0" and container["User"] != "root"
    assert "/healthz" in " ".join(container["HealthCheck"]["Command"])
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert {"REPLAYER_QUEUE", "REPLAYER_TO", "REPLAYER_ALLOW_STREAMS", "REPLAYER_QUARANTINE"} <= set(env)


def test_ecs_stop_timeout_outlasts_the_grace() -> None:
    template = load(ECS)
    container = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["REPLAYER_GRACE_SECONDS"] == {"Ref": "GraceSeconds"}
    mapping, key, field = container["StopTimeout"]["Fn::FindInMap"]
    assert key == {"Ref": "GraceSeconds"}
    grace = template["Parameters"]["GraceSeconds"]
    stop = template["Mappings"][mapping]
    assert {str(g) for g in grace["AllowedValues"]} == set(stop) and str(grace["Default"]) in stop
    for seconds, timeout in stop.items():
        # time to make unfinished messages visible again and exit; Fargate's limit is 120
        assert int(seconds) + 10 <= timeout[field] <= 120, seconds
    check = container["HealthCheck"]
    assert check["Timeout"] < check["Interval"]
    service = template["Resources"]["Service"]["Properties"]
    assert service["HealthCheckGracePeriodSeconds"] >= check["StartPeriod"]


def test_ecs_scales_on_the_backlog_per_task_from_zero() -> None:
    template = load(ECS)
    resources, parameters = template["Resources"], template["Parameters"]
    assert "DesiredCount" not in resources["Service"]["Properties"]  # Application Auto Scaling owns it
    target = resources["ScalableTarget"]["Properties"]
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert refs(target["ResourceId"]) == {"ClusterName", "Service"}
    assert target["MinCapacity"] == {"Ref": "MinTasks"} and target["MaxCapacity"] == {"Ref": "MaxTasks"}
    assert parameters["MinTasks"]["MinValue"] == 0
    tracking = resources["BacklogPerTaskScaling"]["Properties"]
    assert tracking["PolicyType"] == "TargetTrackingScaling"
    config = tracking["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == {"Ref": "BacklogPerTask"}
    queries = {q["Id"]: q for q in config["CustomizedMetricSpecification"]["Metrics"]}
    (returned,) = [q for q in queries.values() if q["ReturnData"]]
    names = {q["MetricStat"]["Metric"]["MetricName"] for q in queries.values() if "MetricStat" in q}
    assert names == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "RunningTaskCount",
    }
    assert "/" in returned["Expression"] and "tasks" in returned["Expression"]
    for query in queries.values():
        if query.get("MetricStat", {}).get("Metric", {}).get("Namespace") == "AWS/SQS":
            (dimension,) = query["MetricStat"]["Metric"]["Dimensions"]
            assert refs(dimension["Value"]) == {"FailureQueueArn"}
    # From zero tasks target tracking cannot start one: the wake-up alarm's step policy does.
    wake = resources["WakeUpScaling"]["Properties"]
    assert wake["PolicyType"] == "StepScaling" and refs(wake["ScalingTargetId"]) == {"ScalableTarget"}
    (step,) = wake["StepScalingPolicyConfiguration"]["StepAdjustments"]
    assert step["ScalingAdjustment"] >= 1
    alarm = resources["WakeUpAlarm"]["Properties"]
    assert refs(alarm["AlarmActions"]) == {"WakeUpScaling"}


# ---- the Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_shape() -> None:
    steps = dockerfile()
    final = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    base = steps[final][1].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    stage = steps[final:]
    users = [a for op, a in stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entry = [i for i, (op, _) in enumerate(stage) if op == "ENTRYPOINT"]
    assert entry and stage[entry[-1]][1] == '["replayer", "run"]'
    assert max(i for i, (op, _) in enumerate(stage) if op == "USER") < entry[-1]
    health = [a for op, a in stage if op == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    installs = [a for op, a in stage if op == "RUN" and "pip install" in a]
    assert installs and "--constraint /tmp/constraints.txt" in installs[0]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignored and "!replayer/" in ignored  # .venv, .git, caches never reach the build


def test_every_runtime_dependency_is_pinned() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    for requirement in metadata.requires(DISTRIBUTION) or []:
        if "extra ==" in requirement:
            continue
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert metadata.version(name) == pins[name], name


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv holding replayer installed as the Dockerfile installs it: from a built wheel.

    No Docker engine (and no network but PyPI) here: the dependencies come from this
    virtualenv, itself installed from the same constraints.txt, through a .pth file.
    """
    where = tmp_path_factory.mktemp("image")
    wheels = where / "wheels"
    # built from a copy of what the Dockerfile copies: setuptools writes build/ beside pyproject.toml
    source = source_copy(where)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("lambda_stream_replayer-*.whl")
    with zipfile.ZipFile(wheel) as built:
        names = built.namelist()
    assert "replayer/lambda_handler.py" in names and "replayer/sources/sqs.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    venv = venv_with(wheel, where / "venv")
    yield venv


def test_image_entrypoint_serves_healthz(
    image_venv: Path, moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    python = image_venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import replayer; print(replayer.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(image_venv) in where  # the wheel's copy, not the source tree
    queue = make_queue(moto_endpoint)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYER_")}
    env |= {
        "REPLAYER_QUEUE": queue,
        "REPLAYER_TO": f"s3://{bucket}",
        "REPLAYER_HTTP_PORT": str(port),
        "REPLAYER_HTTP_HOST": "127.0.0.1",
        "REPLAYER_WAIT_SECONDS": "1",
        "REPLAYER_ALLOW_STREAMS": "*",  # without an allow-list the service refuses to start
    }
    entrypoint = [
        a.strip('" ') for a in shlex.split(dict(dockerfile())["ENTRYPOINT"].strip("[]").replace(",", " "))
    ]
    process = subprocess.Popen(
        [str(image_venv / "bin" / entrypoint[0]), *entrypoint[1:]],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        status = 0
        while status != 200 and time.monotonic() < deadline and process.poll() is None:
            status, body = http_get(port, "/healthz")
            time.sleep(0.1)
        assert status == 200, (
            process.stderr.read().decode() if process.poll() is not None and process.stderr else ""
        )
        assert body == "ok\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(("path", "role"), [(SAM, "ReplayerRole"), (ECS, "TaskRole")], ids=["sam", "ecs"])
def test_kafka_reads_only_the_allowed_clusters_and_secrets(path: Path, role: str) -> None:
    found = statements(load(path), role)
    connect = found["ConnectKafkaClusters"]
    assert set(as_list(connect["Action"])) == {"kafka-cluster:Connect", "kafka:GetBootstrapBrokers"}
    assert refs(connect["Resource"]) == {"KafkaClusterArns"}  # the same parameter feeds --allow-stream
    topics = found["ReadKafkaTopics"]
    assert set(as_list(topics["Action"])) == {"kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"}
    assert topics["Resource"]["Fn::Sub"].endswith(":kafka:${AWS::Region}:${AWS::AccountId}:topic/*")
    secrets = found["ReadKafkaSecrets"]
    assert as_list(secrets["Action"]) == ["secretsmanager:GetSecretValue"]
    assert refs(secrets["Resource"]) == {"KafkaSecretArns"}


def test_sam_joins_the_kafka_vpc_only_when_given_subnets() -> None:
    template = load(SAM)
    function = template["Resources"]["ReplayerFunction"]["Properties"]
    assert function["VpcConfig"]["Fn::If"][0] == "InKafkaVpc"
    assert function["Environment"]["Variables"]["REPLAYER_KAFKA_BROKERS"] == {"Ref": "KafkaBrokers"}
    managed = template["Resources"]["ReplayerRole"]["Properties"]["ManagedPolicyArns"]["Fn::If"]
    assert managed[0] == "InKafkaVpc" and "AWSLambdaVPCAccessExecutionRole" in managed[1][0]["Fn::Sub"]
