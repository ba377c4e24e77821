"""Every option of every command and of the Lambda's environment: ONE table, `OPTIONS`.

Each option is declared once: its setting name (a `Settings` field, which holds the default),
its flags, its `REPLAYER_*` variable, its parser, its help text and metavar, the commands that
take it (`lambda` is the Lambda handler's environment). The CLI's options, the environment
reading of every command, the Lambda's settings and the docs' option table all come from it,
so a flag and its variable can never mean two things.

Everything is parsed here, from strings, so that every problem is found at start-up and
reported together, one clear line each, whether it came from a flag or the environment.
This module imports nothing heavy: the Lambda handler reads its settings at cold start.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from replayer.errors import ConfigError

__all__ = [
    "COMMANDS",
    "ENV",
    "OPTIONS",
    "PANELS",
    "Option",
    "Settings",
    "assume_role_problem",
    "help_text",
    "is_queue_url",
    "load",
    "markdown_table",
    "options_for",
    "parse_duration",
    "queue_region",
    "quarantine_problem",
    "split_list",
]

# The commands that take options, in the order `--help` lists them; `lambda` is the handler.
COMMANDS = ("replay", "fetch", "redrive", "drain", "run", "status", "audit", "why", "lambda")
_WORK = frozenset({"replay", "fetch", "redrive", "drain", "run"})  # the CLI commands that do work
_CONSUMERS = frozenset({"drain", "run", "lambda"})  # who reads a failure queue
_READERS = frozenset({"replay", "fetch", "drain", "run", "lambda"})  # who reads streams
_WATCHERS = frozenset({"run", "lambda"})  # who watches mappings for records at risk (replayer.watch)

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_OUTPUTS = ("table", "json", "jsonl")
# https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, or an emulator's http://host:port/ACCOUNT/NAME.
_QUEUE_URL = re.compile(r"^https?://[^/\s]+/(?P<account>[^/\s]+)/(?P<name>[A-Za-z0-9_-]{1,80}(\.fifo)?)$")
_SQS_MAX_VISIBILITY = 43_200  # 12 hours, SQS's own limit
_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_EXPIRY_WARNING = 366 * 86400  # Kinesis keeps records at most 365 days
# `{sinks}` in a help text: the sink registry's URI forms (`sinks.describe_uri_forms()`), written
# out because importing the sinks loads the AWS SDK, which start-up and `--help` avoid; a test
# keeps the two equal.
SINK_FORMS = "s3://BUCKET[/PREFIX], file:DIR, lambda:NAME[:QUALIFIER] or -"


def parse_duration(text: str) -> float:
    """`7200`, `90s`, `30m`, `2h`, `1.5d` -> seconds. Raises ValueError for anything else."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 7200, 90m, 2h, 1d)")
    return float(m["number"]) * _UNIT_SECONDS[m["unit"]]


def split_list(value: str) -> list[str]:
    """`a,b c` -> ['a', 'b', 'c']: lists in one value, split on commas and spaces."""
    return [part for part in re.split(r"[\s,]+", value) if part]


def is_queue_url(value: str) -> bool:
    return _QUEUE_URL.match(value) is not None


def queue_region(queue_url: str) -> str | None:
    """The region in an SQS queue URL's host (None for an emulator's: the environment's region)."""
    parts = queue_url.split("/")[2].split(".") if queue_url.count("/") >= 2 else []
    if len(parts) >= 3 and parts[0] == "sqs":
        return parts[1]  # sqs.REGION.amazonaws.com
    if len(parts) >= 3 and parts[1] == "queue":
        return parts[0]  # the legacy REGION.queue.amazonaws.com
    return None


def quarantine_problem(uri: str) -> str | None:
    """What is wrong with a `--quarantine` value, or None: s3://BUCKET[/PREFIX] or an SQS queue URL."""
    if uri.startswith("s3://"):
        bucket = uri[len("s3://") :].partition("/")[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            return f"{uri!r}: not a bucket name; expected s3://BUCKET[/PREFIX]"
        return None
    if is_queue_url(uri):
        return None
    return f"{uri!r}: expected s3://BUCKET[/PREFIX] or an SQS queue URL"


# ---- parsers: text -> value, or ValueError saying what is wrong (the source is added by the caller)


def _text(value: str) -> str:
    return value.strip()


def _where(value: str) -> str:
    """A `--where` pattern (JSON or @FILE), checked here, kept as given."""
    from replayer.selection import read_pattern

    try:
        read_pattern(value.strip())
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("--where: ")) from None
    return value.strip()


_ACCOUNT_ROLE = re.compile(r"^[0-9]{12}=arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+$")
_ROLE_TEMPLATE = re.compile(r"^arn:aws[a-z-]*:iam::\{account\}:role/\S+$")


def assume_role_problem(spec: str) -> str | None:
    """Why `spec` is neither ACCOUNT=ROLE_ARN nor a role ARN template with `{account}` (None: it is one)."""
    if _ACCOUNT_ROLE.match(spec) or _ROLE_TEMPLATE.match(spec):
        return None
    return (
        f"{spec!r} is neither ACCOUNT=ROLE_ARN (e.g. 111122223333=arn:aws:iam::111122223333:role/reader) "
        "nor a role ARN template such as arn:aws:iam::{account}:role/replayer-reader"
    )


def _kafka_brokers(value: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`SOURCE_GLOB=HOST:PORT[,HOST:PORT...]` entries, separated by spaces or semicolons."""
    from replayer.model import kafka_servers

    entries = []
    for entry in re.split(r"[\s;]+", value.strip()):
        glob, equals, servers = entry.rpartition("=")
        listed = kafka_servers(servers) if equals and glob else None
        if listed is None:
            raise ValueError(
                f"{entry!r} is not SOURCE_GLOB=HOST:PORT[,HOST:PORT...] "
                "(e.g. 'arn:aws:kafka:*:cluster/orders/*=b-1.example:9098' or 'kafka://*=127.0.0.1:9092')"
            )
        entries.append((glob, listed))
    return tuple(entries)


def _kafka_topic(value: str) -> tuple[str, str]:
    """`CLUSTER=TOPIC`: an MSK cluster ARN or kafka://servers, and a topic name."""
    from replayer.model import kafka_topic_ok

    cluster, equals, topic = value.strip().rpartition("=")
    if not (equals and cluster and kafka_topic_ok(topic)):
        raise ValueError(f"{value!r} is not CLUSTER=TOPIC (e.g. 'kafka://127.0.0.1:9092=failed-records')")
    return cluster, topic


def _assume_role(value: str) -> str:
    spec = value.strip()
    if problem := assume_role_problem(spec):
        raise ValueError(problem)
    return spec


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"{value} is out of range ({low} to {high})")
        return number

    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not (math.isfinite(number) and low <= number <= high):
            raise ValueError(f"{value} is out of range ({low:g} to {high:g})")
        return number

    return parse


def _duration(high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        seconds = parse_duration(value)
        if seconds > high:
            raise ValueError(f"{value} is out of range (at most {high:g} seconds)")
        return seconds

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.strip().lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value.strip().lower()

    return parse


def _on_off(value: str) -> bool:
    word = value.strip().lower()
    if word in ("on", "yes", "true", "1"):
        return True
    if word in ("off", "no", "false", "0"):
        return False
    raise ValueError(f"{value!r} is not on or off")


def _stream_arn(value: str) -> str:
    from replayer.model import parse_stream_arn

    if parse_stream_arn(value.strip()) is None:
        raise ValueError(f"{value!r} is not a DynamoDB or Kinesis stream ARN (globs are not watched)")
    return value.strip()


def _function_name(value: str) -> str:
    if not re.fullmatch(
        r"(arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:)?[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9$_-]+)?",
        value.strip(),
    ):
        raise ValueError(f"{value!r} is not a function name or ARN")
    return value.strip()


def _port(value: str) -> int | None:
    if value.strip().lower() in ("off", "none", "no", "false"):
        return None
    return _whole(0, 65535)(value)


def _queue(value: str) -> str:
    if not is_queue_url(value.strip()):
        hint = ""
        if re.fullmatch(r"[A-Za-z0-9_-]{1,80}(\.fifo)?", value.strip()):  # a name: say how to get its URL
            hint = f"; a name is not enough: aws sqs get-queue-url --queue-name {value.strip()}"
        raise ValueError(
            f"{value!r} is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME){hint}"
        )
    return value.strip()


_KMS_KEY = re.compile(
    r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[A-Za-z0-9-]{1,64}|alias/[A-Za-z0-9/_-]{1,250})"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]{1,250})$"
)


def _manifest_key(value: str) -> str:
    if not _KMS_KEY.match(value.strip()):
        raise ValueError(f"{value!r} is not a KMS key id, key ARN, alias/NAME or alias ARN")
    return value.strip()


def _range_id(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{8,32}", value.strip().lower()):
        raise ValueError(f"{value!r} is not a range id (8 to 32 hexadecimal characters)")
    return value.strip().lower()


def _quarantine(value: str) -> str:
    problem = quarantine_problem(value.strip())
    if problem:
        raise ValueError(problem)
    return value.strip()


def _fraction(value: str) -> float | None:
    """A breaker threshold: a fraction above 0 and at most 1, or off."""
    if value.strip().lower() in ("off", "none", "no", "false"):
        return None
    number = _number(0, 1)(value)
    if number <= 0:
        raise ValueError(f"{value} is out of range (above 0, at most 1; or off)")
    return number


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _run_name(value: str) -> str:
    if not _RUN_NAME.match(value.strip()):
        raise ValueError(f"{value!r} is not a run name (letters, digits, '.', '_', '-'; at most 64)")
    return value.strip()


@dataclass(frozen=True, slots=True)
class Option:
    """One option: a `Settings` field, its flags and variable, how it is parsed and explained."""

    name: str  # the `Settings` field; its default is the option's default
    flags: tuple[str, ...]  # the long flag first: it names the option in messages
    help: str  # one sentence or two; `{sinks}` stands for the sink URI forms
    commands: frozenset[str]
    metavar: str | None = None  # None: a switch (or a counter) that takes no value
    parse: Callable[[str], Any] = _text
    env: str | None = None  # REPLAYER_*: read the same way by every command that takes the option
    repeat: bool = False  # repeatable flag; its variable is split on commas and spaces
    count: bool = False  # -v -v: a counter
    defaults: Mapping[str, Any] = field(default_factory=dict)  # per command, over the Settings default
    required: frozenset[str] = frozenset()  # commands that cannot run without it
    panel: str = ""  # the group `--help` lists it in (rich help panels)
    tuning: bool = False  # left out of `--help`'s panels (named in its last lines): limits most never change
    only: Mapping[str, str] = field(default_factory=dict)  # per command: a sentence its help adds
    more: str = ""  # what the docs' option table adds to `help` (kept out of `--help`)

    @property
    def flag(self) -> str:
        return self.flags[0]

    def default(self, command: str) -> Any:
        if command in self.defaults:
            return self.defaults[command]
        return _FIELD_DEFAULTS[self.name]


def _cmds(*names: str) -> frozenset[str]:
    return frozenset(names)


# The groups `--help` shows options in, in this order.
_INPUT = "Input"
_SELECT = "Selection"
_SINKS = "Where records go"
_TRUST = "Trust (deny by default)"
_REPAIR = "Repair functions (lambda: sinks)"
_LIMITS = "Limits"
_SERVICE = "Service"
_OUTPUT = "Run and output"
PANELS = (_INPUT, _SINKS, _SELECT, _TRUST, _REPAIR, _LIMITS, _SERVICE, _OUTPUT)


OPTIONS: tuple[Option, ...] = (
    Option(
        "queue", ("--queue",), "The SQS queue URL to consume (the on-failure destination).",
        (_CONSUMERS - {"lambda"}) | {"status", "audit"}, "URL", _queue, "REPLAYER_QUEUE",
        required=_cmds("drain", "run"), panel=_INPUT,
    ),
    Option(
        "kafka_topic", ("--kafka-topic",),
        "A Kafka dead-letter topic to consume instead of --queue (a Kafka-topic on-failure destination): "
        "CLUSTER=TOPIC, the cluster named as in --allow-stream (its brokers: --kafka-brokers, else MSK's).",
        _cmds("drain", "run"), "CLUSTER=TOPIC", _kafka_topic, "REPLAYER_KAFKA_TOPIC", panel=_INPUT,
    ),
    Option(
        "kafka_group", ("--kafka-group",),
        "The consumer group of --kafka-topic: its offsets move only past records whose ranges are settled.",
        _cmds("drain", "run"), "GROUP", _text, "REPLAYER_KAFKA_GROUP", panel=_INPUT,
    ),
    Option(
        "to", ("--to",),
        "Where recovered records go: {sinks}. Repeatable.",
        _WORK | {"lambda"}, "URI", _text, "REPLAYER_TO", repeat=True,
        required=_cmds("replay", "fetch", "redrive", "drain", "run", "lambda"), panel=_SINKS,
        only={"redrive": "Repair functions (lambda:) only."},
    ),
    Option(
        "redrive_from", ("--from",), "The archive written by --to: s3://BUCKET[/PREFIX] or file:DIR.",
        _cmds("redrive", "status", "audit", "why"), "URI", _text, "REPLAYER_REDRIVE_FROM",
        required=_cmds("redrive", "audit", "why"), panel=_INPUT,
    ),
    Option(
        "manifest_key", ("--manifest-key",),
        "KMS HMAC key signing every archive manifest; what it did not sign is refused when read back.",
        _WORK | {"lambda", "status"}, "KEY", _manifest_key, "REPLAYER_MANIFEST_KEY", panel=_TRUST, tuning=True,
        more="A key id, ARN or alias of a KMS key with KeySpec HMAC_256 (kms:GenerateMac when writing, "
        "kms:VerifyMac when reading: redrive, status and retries adopting an earlier attempt's folder). "
        "Unset: the archive prefix is trusted storage (docs/archive.md).",
    ),
    Option(
        "stream_arn", ("--stream-arn",), "The DynamoDB or Kinesis stream ARN to read.",
        _cmds("fetch"), "ARN", required=_cmds("fetch"), panel=_INPUT,
    ),
    Option("shard_id", ("--shard-id",), "The shard to read.", _cmds("fetch"), "SHARD", required=_cmds("fetch"), panel=_INPUT),
    Option(
        "start", ("--start",), "The first sequence number (inclusive).", _cmds("fetch"), "SEQUENCE",
        required=_cmds("fetch"), panel=_INPUT,
    ),
    Option(
        "end", ("--end",), "The last sequence number (inclusive).", _cmds("fetch"), "SEQUENCE",
        required=_cmds("fetch"), panel=_INPUT,
    ),
    Option(
        "range_ids", ("--range-id",),
        "Only this range: its id, or the first 8 or more characters of it (as a table shows it). Repeatable.",
        _cmds("redrive"), "RANGE_ID", _range_id, repeat=True, panel=_SELECT,
    ),
    Option(
        "stream_filter", ("--stream-arn",), "Only ranges of this stream (ARN or glob). Repeatable.",
        _cmds("redrive"), "ARN", repeat=True, panel=_SELECT,
    ),
    Option(
        "since", ("--since",),
        "Only records that arrived at or after this time (ISO 8601).",
        _cmds("replay", "fetch", "redrive", "audit"), "ISO_TIME", panel=_SELECT,
        more="Arrival times are the stream's approximate ones; without a zone: UTC.",
        only={
            "redrive": "Also only ranges whose first record did.",
            "audit": "The start of the window compared (default: 24 hours ago).",
        },
    ),
    Option(
        "until", ("--until",),
        "Only records that arrived before this time.",
        _cmds("replay", "fetch", "redrive"), "ISO_TIME", panel=_SELECT,
        only={"redrive": "Also only ranges whose first record did."},
    ),
    Option(
        "where", ("--where",),
        "lambda: sinks: records matching this event pattern (JSON or @FILE).",
        _cmds("replay", "fetch", "redrive"), "PATTERN", _where, panel=_SELECT,
    ),
    Option(
        "shards", ("--shard",), "Only ranges of this shard. Repeatable.", _cmds("replay", "redrive"),
        "SHARD_ID", repeat=True, panel=_SELECT,
    ),
    Option(
        "limit", ("--limit",), "lambda: sinks: at most N records in all, earliest deadlines first.",
        _cmds("replay", "fetch", "redrive"), "N", _whole(0, 10_000_000), panel=_SELECT,
    ),
    Option(
        "show", ("--show",), "With --dry-run: print the records it would send (JSON Lines).",
        _cmds("replay", "fetch", "redrive"), panel=_OUTPUT,
    ),
    Option(
        "force", ("--force",), "Re-drive ranges even if already re-driven to that function.", _cmds("redrive"), panel=_SELECT,
    ),
    Option(
        "allow_streams", ("--allow-stream",),
        "Glob on the stream ARNs that may be read (others: rejected). Repeatable; '*': all.",
        _READERS | {"redrive"}, "GLOB", _text, "REPLAYER_ALLOW_STREAMS", repeat=True,
        more="Unset: no stream (deny by default): drain, run, redrive and the Lambda refuse to start, replay "
        "and fetch stop at pre-flight naming the streams to allow.", panel=_TRUST,
    ),
    Option(
        "watch_streams", ("--watch-stream",),
        "A stream (ARN, no glob; --allow-stream must allow it) whose event source mappings are watched for "
        "records close to expiry (IteratorAge against the retention). Repeatable.",
        _WATCHERS | {"audit"}, "ARN", _stream_arn, "REPLAYER_WATCH_STREAMS", repeat=True, panel=_SERVICE,
    ),
    Option(
        "watch_functions", ("--watch-function",),
        "A function (name or ARN) whose stream event source mappings are watched, for the streams "
        "--allow-stream allows. Repeatable.",
        _WATCHERS | {"audit"}, "FUNCTION", _function_name, "REPLAYER_WATCH_FUNCTIONS", repeat=True, panel=_SERVICE,
    ),
    Option(
        "kafka_brokers", ("--kafka-brokers",),
        "Kafka: GLOB=HOST:PORT[,HOST:PORT]: the brokers (plaintext) of clusters matching GLOB.",
        _READERS, "GLOB=BROKERS", _kafka_brokers, "REPLAYER_KAFKA_BROKERS", panel=_INPUT, tuning=True,
        more=(
            "GLOB matches the cluster's name: its MSK cluster ARN, or kafka://HOST:PORT,... for self-managed "
            "Kafka; entries are separated by spaces. Other clusters: their event source mapping's brokers "
            "and authentication (docs/kafka.md). A record's bootstrapServers is never used."
        ),
    ),
    Option(
        "assume_roles", ("--assume-role",),
        "Role for another account: ACCOUNT=ROLE_ARN, or an ARN template with {{account}}. Repeatable.",
        _READERS | {"redrive"}, "ACCOUNT=ROLE_ARN", _assume_role, "REPLAYER_ASSUME_ROLES", repeat=True,
        more="Our own account and any other use the default credentials; --allow-stream still decides "
        "what is read.", panel=_TRUST,
    ),
    Option(
        "failure_buckets", ("--failure-bucket",),
        "S3 bucket or bucket/prefix whose objects are believed as failure records (S3 on-failure "
        "destinations): the Lambda reads only these, and only their inline payloads are trusted. "
        "Repeatable. Unset: none (deny by default); '*' allows every bucket.",
        _cmds("lambda"), "BUCKET[/PREFIX]", _text, "REPLAYER_FAILURE_BUCKETS", repeat=True, panel=_TRUST,
    ),
    Option(
        "range_budget_seconds", ("--range-budget",),
        "Time one attempt at a range may take, reading and delivering (e.g. 300, 5m); past it the "
        "range is retried later and its message's visibility is no longer extended.",
        _READERS | {"redrive"}, "DURATION", _duration(12 * 3600), "REPLAYER_RANGE_BUDGET", panel=_LIMITS, tuning=True,
    ),
    Option(
        "call_deadline_seconds", ("--call-deadline",),
        "Total time one AWS call may take, retries, connection set-up and waits included (e.g. 120, 2m). "
        "A Lambda invoke gets its function's 900 s more.",
        _WORK | {"lambda"}, "DURATION", _duration(3600), "REPLAYER_CALL_DEADLINE", panel=_LIMITS, tuning=True,
    ),
    Option(
        "max_records_per_range", ("--max-records-per-range",),
        "Most records a range may hold when its mapping is not known to be unfiltered (else its "
        "batchSize); a range that spans more is rejected as not genuine.",
        _READERS, "N", _whole(1, 1_000_000), "REPLAYER_MAX_RECORDS_PER_RANGE", panel=_TRUST, tuning=True,
    ),
    Option(
        "max_ranges_per_message", ("--max-ranges-per-message",),
        "Most ranges one message may name (AWS sends one); the ranges past it are not read and the "
        "message is quarantined with the reason.",
        _CONSUMERS, "N", _whole(1, 10_000), "REPLAYER_MAX_RANGES_PER_MESSAGE", panel=_TRUST, tuning=True,
    ),
    Option(
        "max_object_bytes", ("--max-object-bytes",),
        "Lambda: the largest S3 object read as a failure record; a larger one is quarantined by reference.",
        _cmds("lambda"), "BYTES", _whole(1, 1 << 30), "REPLAYER_MAX_OBJECT_BYTES", panel=_TRUST,
    ),
    Option(
        "quarantine", ("--quarantine",),
        "Where malformed and not-allowed messages go before being deleted: s3://BUCKET[/PREFIX] or an "
        "SQS queue URL. Unset: they stay on the queue for its redrive policy.",
        _CONSUMERS | {"status", "audit"}, "URI", _quarantine, "REPLAYER_QUARANTINE", panel=_SINKS,
    ),
    Option(
        "concurrency", ("--concurrency",), "Ranges at once, earliest expiry deadline first.",
        (_WORK - {"fetch"}) | {"lambda"}, "N", _whole(1, 256), "REPLAYER_CONCURRENCY", defaults={"redrive": 4}, panel=_OUTPUT,
    ),
    Option(
        "prefetch", ("--prefetch",), "Messages held (invisible, heartbeated) beyond those in flight.",
        _cmds("run"), "N", _whole(0, 1000), "REPLAYER_PREFETCH", panel=_LIMITS, tuning=True,
    ),
    Option(
        "grace_seconds", ("--grace-seconds",),
        "On SIGTERM/SIGINT, seconds in-flight ranges get to finish; no new range starts.",
        _WORK, "SECONDS", _number(0, 3600), "REPLAYER_GRACE_SECONDS", defaults={"replay": 10.0, "fetch": 10.0,
                                                                               "redrive": 10.0}, panel=_LIMITS, tuning=True,
    ),
    Option(
        "http_port", ("--http-port",), "Port of /healthz, /readyz and /metrics; off: no HTTP server.",
        _cmds("drain", "run"), "PORT", _port, "REPLAYER_HTTP_PORT", defaults={"run": 8080}, panel=_SERVICE,
    ),
    Option(
        "http_host", ("--http-host",), "Address the HTTP server listens on.", _cmds("drain", "run"), "ADDRESS",
        _text, "REPLAYER_HTTP_HOST", panel=_SERVICE, tuning=True,
    ),
    Option(
        "status_endpoint", ("--status-endpoint",),
        "Serve /status on the HTTP port: queue, dead-letter queue and quarantine counts and the nearest "
        "expiry (gathered at most every 5 s); off: not served.",
        _cmds("drain", "run"), "on/off", _on_off, "REPLAYER_STATUS_ENDPOINT", panel=_SERVICE,
    ),
    Option(
        "visibility_timeout", ("--visibility-timeout",),
        "Seconds a held message stays invisible; renewed every third of it.",
        _cmds("drain", "run"), "SECONDS", _whole(1, _SQS_MAX_VISIBILITY), "REPLAYER_VISIBILITY_TIMEOUT", panel=_SERVICE, tuning=True,
    ),
    Option(
        "wait_seconds", ("--wait-seconds",),
        "Long-poll wait, 0 to 20 seconds.",
        _cmds("drain", "run"), "SECONDS", _whole(0, 20), "REPLAYER_WAIT_SECONDS", defaults={"drain": 2},
        only={"drain": "Until messages come; then a short poll finding none, with SQS counting none waiting, ends it."}, panel=_SERVICE,
    ),
    Option(
        "retry_base_seconds", ("--retry-base-seconds",), "First retry delay of a message, doubling per receive.",
        _CONSUMERS, "SECONDS", _whole(0, _SQS_MAX_VISIBILITY), "REPLAYER_RETRY_BASE_SECONDS", panel=_SERVICE, tuning=True,
    ),
    Option(
        "retry_max_seconds", ("--retry-max-seconds",), "Longest retry delay of a message.",
        _CONSUMERS, "SECONDS", _whole(0, _SQS_MAX_VISIBILITY), "REPLAYER_RETRY_MAX_SECONDS", panel=_SERVICE, tuning=True,
    ),
    Option(
        "safety_margin_seconds", ("--safety-margin-seconds",),
        "Lambda: no new range starts with less time than this left.",
        _cmds("lambda"), "SECONDS", _number(0, 900), "REPLAYER_SAFETY_MARGIN_SECONDS", panel=_LIMITS,
    ),
    Option(
        "max_records_per_invoke", ("--max-records-per-invoke",),
        "lambda: sinks: records per invocation (unset: the range's batchSize, else 100); "
        "invocations also stay under the 6 MB payload limit.",
        _WORK | {"lambda"}, "N", _whole(1, 10_000), "REPLAYER_MAX_RECORDS_PER_INVOKE", panel=_REPAIR, tuning=True,
    ),
    Option(
        "invoke_retries", ("--invoke-retries",),
        "lambda: sinks: retries of invocations in a row that confirmed no record (failed, or left the first "
        "unconfirmed), with backoff; one that confirms records is followed at once.",
        _WORK | {"lambda"}, "N", _whole(0, 100), "REPLAYER_INVOKE_RETRIES", panel=_REPAIR, tuning=True,
    ),
    Option(
        "max_invocations", ("--max-invocations",),
        "lambda: sinks: invocations of one batch at most, however many confirm records (those that "
        "confirm none are limited by --invoke-retries).",
        _WORK | {"lambda"}, "N", _whole(1, 100_000), "REPLAYER_MAX_INVOCATIONS", panel=_REPAIR, tuning=True,
    ),
    Option(
        "invoke_time_limit", ("--invoke-time-limit",),
        "lambda: sinks: seconds one batch may be re-driven for, however it progresses.",
        _WORK | {"lambda"}, "SECONDS", _number(1, 86_400), "REPLAYER_INVOKE_TIME_LIMIT", panel=_REPAIR, tuning=True,
    ),
    Option(
        "rate", ("--rate",),
        "lambda: sinks: records per second at most, in the whole process.",
        _WORK | {"lambda"}, "N", _number(0.001, 1_000_000), "REPLAYER_RATE", panel=_REPAIR,
        more="(A token bucket.) Unset: as fast as the function answers.",
    ),
    Option(
        "ramp_seconds", ("--ramp",),
        "lambda: sinks: start at a tenth of --rate and rise linearly to it over this long (e.g. 60, 5m).",
        _WORK | {"lambda"}, "DURATION", _duration(86_400), "REPLAYER_RAMP", panel=_REPAIR, tuning=True,
    ),
    Option(
        "max_inflight", ("--max-inflight",), "lambda: sinks: invocations at once, at most, in the process.",
        _WORK | {"lambda"}, "N", _whole(1, 10_000), "REPLAYER_MAX_INFLIGHT", panel=_REPAIR, tuning=True,
    ),
    Option(
        "stop_at_error_rate", ("--stop-at-error-rate",),
        "lambda: sinks: the breaker: stop when this fraction of the last --error-window invocations "
        "failed; off: never.",
        _WORK | {"lambda"}, "FRACTION", _fraction, "REPLAYER_STOP_AT_ERROR_RATE", panel=_REPAIR, tuning=True,
        more="(Throttling is not counted.) No invocation starts: the run ends stopped, exit 3 (the service and "
        "the Lambda pause for --breaker-cooldown instead, then try one invocation).",
    ),
    Option(
        "error_window", ("--error-window",), "lambda: sinks: the invocations the breaker looks back on.",
        _WORK | {"lambda"}, "N", _whole(1, 10_000), "REPLAYER_ERROR_WINDOW", panel=_REPAIR, tuning=True,
    ),
    Option(
        "breaker_cooldown", ("--breaker-cooldown",),
        "run, Lambda: how long a tripped breaker pauses re-driving before one invocation tries again.",
        _cmds("run", "lambda"), "DURATION", _duration(3600), "REPLAYER_BREAKER_COOLDOWN",
        defaults={"run": 60.0, "lambda": 60.0}, panel=_REPAIR, tuning=True,
    ),
    Option(
        "skip_stale", ("--skip-stale",),
        "lambda: sinks, DynamoDB: only records whose item is still as they left it.",
        _WORK | {"lambda"}, env="REPLAYER_SKIP_STALE", panel=_REPAIR,
        more="Each record's item is read back (BatchGetItem, consistent, within --rate): the item equals its "
        "NewImage; for REMOVE: no item. Needs dynamodb:BatchGetItem on the table.",
    ),
    Option(
        "latest_per_key", ("--latest-per-key",),
        "lambda: sinks, DynamoDB: only the newest record of each item key.",
        _WORK | {"lambda"}, env="REPLAYER_LATEST_PER_KEY", panel=_REPAIR,
        only={"redrive": "Across every range selected."}, more="(The others are superseded.)",
    ),
    Option(
        "run_name", ("--run",),
        "redrive: the run's name in the archive's ledger (runs/NAME/); a rerun of a name resumes it. "
        "Unset: a generated name, printed first.",
        _cmds("redrive"), "NAME", _run_name, panel=_OUTPUT,
    ),
    Option(
        "no_filter", ("--no-filter",),
        "lambda: sinks: every record, even those the mapping's filter drops.",
        _WORK, panel=_SELECT, more="(The function never saw the others.) Archives keep every record anyway.",
    ),
    Option(
        "invoke_identity_arn", ("--invoke-identity-arn",),
        "Kinesis: the role ARN put in records' invokeIdentityArn (unset: the execution role of the function "
        "they go to, or that failed for archives, as Lambda does).",
        _READERS, "ARN", _text, "REPLAYER_INVOKE_IDENTITY_ARN", panel=_REPAIR, tuning=True,
    ),
    Option(
        "expiry_warning", ("--expiry-warning",),
        "Warn about ranges this close to their expiry deadline (first arrival + the stream's retention).",
        _READERS, "DURATION", _duration(_MAX_EXPIRY_WARNING), "REPLAYER_EXPIRY_WARNING", panel=_LIMITS, tuning=True,
    ),
    Option(
        "at_risk_margin", ("--at-risk-margin",),
        "A watched mapping is at risk when its oldest unprocessed record (IteratorAge) is this close to "
        "the stream's retention: a warning, and with --rescue-at-risk its shards are archived.",
        _WATCHERS, "DURATION", _duration(_MAX_EXPIRY_WARNING), "REPLAYER_AT_RISK_MARGIN", panel=_SERVICE,
    ),
    Option(
        "rescue_at_risk", ("--rescue-at-risk",),
        "Archive the shards of an at-risk mapping's stream (from the trim horizon, or after what was "
        "already rescued, to the newest record) into the --to archives, marked at-risk.",
        _WATCHERS, None, _text, "REPLAYER_RESCUE_AT_RISK", panel=_SERVICE,
    ),
    Option(
        "at_risk_max_records", ("--at-risk-max-records",),
        "Most records one rescue archives of one shard per round (the next round goes on from there); "
        "at most --max-records-per-range.",
        _WATCHERS, "N", _whole(1, 1_000_000), "REPLAYER_AT_RISK_MAX_RECORDS", panel=_SERVICE, tuning=True,
    ),
    Option(
        "watch_interval", ("--watch-interval",), "How often run looks at the watched mappings.",
        _cmds("run"), "DURATION", _duration(86_400), "REPLAYER_WATCH_INTERVAL", panel=_SERVICE, tuning=True,
    ),
    Option(
        "dry_run", ("--dry-run",),
        "Report what would be read and sent; write and invoke nothing.",
        _cmds("replay", "fetch", "redrive"), panel=_OUTPUT,
    ),
    Option(
        "no_preflight", ("--no-preflight",),
        "Skip the set-up checks made before any work.", _WORK,
        more="(Credentials, endpoint, sinks, queue, streams; dry runs make them too.) A stream that does not exist rejects its own ranges (no such stream) either way.", panel=_OUTPUT,
    ),
    Option(
        "output", ("--output", "-o"), "table, json or jsonl (a line per range).",
        (_WORK - {"run"}) | {"status", "audit", "why"}, "FORMAT", _choice(*_OUTPUTS), panel=_OUTPUT,
    ),
    Option("as_json", ("--json",), "Same as --output json.", (_WORK - {"run"}) | {"status", "audit", "why"}, panel=_OUTPUT),
    Option(
        "watch", ("--watch",), "Print again every SECONDS until interrupted.", _cmds("status"),
        "SECONDS", _number(1, 86_400), panel=_OUTPUT,
    ),
    Option("quiet", ("--quiet", "-q"), "Errors and the summary line only: no table, no progress bar.",
           _WORK, panel=_OUTPUT),
    Option("verbose", ("--verbose", "-v"), "More log lines on stderr: -v info, -vv debug.", _WORK, count=True, panel=_OUTPUT),
    Option(
        "log_level", ("--log-level",), "Log level of the JSON log lines on stderr: debug, info, warning, error.",
        _WORK | {"lambda"}, "LEVEL", _choice(*_LOG_LEVELS), "REPLAYER_LOG_LEVEL", panel=_OUTPUT, tuning=True,
    ),
)  # fmt: skip

ENV = {o.name: o.env for o in OPTIONS if o.env}
_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings of one command. Build with `load`, which reports every problem at once.

    The defaults here are the options' defaults (see `OPTIONS` for per-command ones).
    """

    to: tuple[str, ...] = ()
    queue: str | None = None
    kafka_topic: tuple[str, str] | None = None
    kafka_group: str = "replayer"
    redrive_from: str | None = None
    manifest_key: str | None = None
    stream_arn: str | None = None
    shard_id: str | None = None
    start: str | None = None
    end: str | None = None
    range_ids: tuple[str, ...] = ()
    stream_filter: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    force: bool = False
    where: str | None = None
    shards: tuple[str, ...] = ()
    limit: int | None = None
    show: bool = False
    watch: float | None = None
    allow_streams: tuple[str, ...] = ()
    watch_streams: tuple[str, ...] = ()
    watch_functions: tuple[str, ...] = ()
    kafka_brokers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    assume_roles: tuple[str, ...] = ()
    failure_buckets: tuple[str, ...] = ()
    range_budget_seconds: float = 300.0
    call_deadline_seconds: float = 120.0
    max_records_per_range: int = 10_000
    max_ranges_per_message: int = 10
    max_object_bytes: int = 16 * 1024 * 1024  # an S3 destination object holds one batch: at most ~6 MB
    quarantine: str | None = None
    concurrency: int = 8
    prefetch: int = 10
    grace_seconds: float = 30.0
    http_port: int | None = None
    http_host: str = "0.0.0.0"  # a container's health checks come from outside its namespace
    status_endpoint: bool = True
    visibility_timeout: int = 60
    wait_seconds: int = 20
    retry_base_seconds: int = 30
    retry_max_seconds: int = 900
    safety_margin_seconds: float = 10.0
    max_records_per_invoke: int | None = None
    invoke_retries: int = 3
    max_invocations: int = 100  # lambda: sinks, per batch
    invoke_time_limit: float = 900.0  # lambda: sinks, seconds per batch
    rate: float | None = None  # lambda: sinks, records per second
    ramp_seconds: float = 0.0
    max_inflight: int | None = None
    stop_at_error_rate: float | None = 0.5
    error_window: int = 10
    breaker_cooldown: float | None = None  # None: a tripped breaker stops the run (run, Lambda: 60 s)
    skip_stale: bool = False
    latest_per_key: bool = False
    run_name: str | None = None
    no_filter: bool = False
    invoke_identity_arn: str | None = None
    log_level: str = "warning"
    expiry_warning: float = 7200.0  # seconds
    at_risk_margin: float = 6 * 3600.0  # seconds
    rescue_at_risk: bool = False
    at_risk_max_records: int = 10_000
    watch_interval: float = 60.0  # seconds
    dry_run: bool = False
    no_preflight: bool = False
    output: str = "table"
    as_json: bool = False
    quiet: bool = False
    verbose: int = 0
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def heartbeat_seconds(self) -> float:
        """How often held messages get their visibility extended: well before it lapses."""
        return max(0.2, self.visibility_timeout / 3)

    @property
    def output_format(self) -> str:
        """table, json or jsonl: `--json` is `--output json`."""
        return "json" if self.as_json else self.output


_FIELD_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}


def options_for(command: str) -> tuple[Option, ...]:
    """The options `command` takes, in table order."""
    return tuple(o for o in OPTIONS if command in o.commands)


class _Reader:
    """Reads each option from its flag or else its variable, collecting one problem per mistake."""

    def __init__(self, command: str, flags: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.command = command
        self.flags = flags
        self.env = env
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}
        self.invalid: set[str] = set()  # options given with a value that did not parse

    def texts(self, option: Option) -> list[str] | None:
        """The option's raw texts (one for a single value), or None when unset."""
        value = self.flags.get(option.name)
        if value is not None and value not in ([], ()):
            self.sources[option.name] = option.flag
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if option.repeat:  # `--to a,b` means what REPLAYER_TO=a,b means
                return [item for v in values for item in split_list(str(v))]
            return [str(values[-1])]
        text = self.env.get(option.env, "").strip() if option.env else ""
        if not text:
            return None
        self.sources[option.name] = option.env or option.flag
        return split_list(text) if option.repeat else [text]

    def value(self, option: Option) -> Any:
        if option.metavar is None:  # switches and counters: flags, or a switch's variable (true/false)
            raw = self.flags.get(option.name)
            if raw is None or raw is False:
                text = self.env.get(option.env, "").strip().lower() if option.env and not option.count else ""
                if text in _TRUE or text in _FALSE:
                    return text in _TRUE
                if text:
                    self.problems.append(f"{option.env}: {text!r} is not true or false")
            return option.default(self.command) if raw is None else raw
        texts = self.texts(option)
        if texts is None:
            return option.default(self.command)
        try:
            parsed = [option.parse(t) for t in texts]
        except ValueError as exc:
            self.problems.append(f"{self.sources[option.name]}: {exc}")
            self.invalid.add(option.name)
            return option.default(self.command)
        return tuple(parsed) if option.repeat else parsed[0]

    def source(self, name: str) -> str:
        return self.sources.get(name) or _BY_NAME[name].flag


def load(
    command: str,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    sink_check: Callable[[str], str | None] | None = None,
    durable_check: Callable[[Sequence[str]], bool] | None = None,
) -> Settings:
    """The settings of `command` from `flags` (None or empty: unset) over `env` (default: os.environ).

    Raises ConfigError listing every problem, one a line. `sink_check(uri)` returns a problem
    with a `--to` URI or None; `durable_check(uris)` says whether any sink keeps loss reports
    (without one, a consumer records a warning in `Settings.warnings`).
    """
    r = _Reader(command, flags or {}, os.environ if env is None else env)
    values: dict[str, Any] = {}
    for option in options_for(command):
        values[option.name] = r.value(option)
    for option in options_for(command):
        missing = (values[option.name] is None or values[option.name] == ()) and option.name not in r.invalid
        if option.name == "queue" and values.get("kafka_topic"):
            missing = False  # the failure source is a Kafka dead-letter topic
        if missing and command in option.required and not (option.name == "to" and values.get("dry_run")):
            r.problems.append(_required(option))
    settings = replace(Settings(), **values)
    if sink_check is not None:
        for uri in settings.to:
            problem = sink_check(uri)
            if problem:
                r.problems.append(f"{r.source('to')}: {problem}")
    templates = {spec for spec in settings.assume_roles if "=" not in spec}
    if len(templates) > 1:
        r.problems.append(f"{r.source('assume_roles')}: at most one role ARN template, not {len(templates)}")
    r.problems += _watch_problems(r, settings)
    if settings.queue and settings.kafka_topic:
        r.problems.append("--queue and --kafka-topic: consume one failure source, not both")
    if settings.retry_base_seconds > settings.retry_max_seconds:
        r.problems.append(
            f"retry delays: base {settings.retry_base_seconds}s is more than max {settings.retry_max_seconds}s"
        )
    if command in _CONSUMERS and not settings.allow_streams:
        r.problems.append(_NO_STREAM_ALLOWED)
    if r.problems:
        raise ConfigError(_problems(r.problems))
    return replace(settings, warnings=tuple(_warnings(command, settings, durable_check)))


def _watch_problems(r: _Reader, settings: Settings) -> list[str]:
    """What is wrong with the at-risk watch's settings: streams not allowed, a rescue with no archive."""
    import fnmatch

    problems = [
        f"{r.source('watch_streams')}: {arn} is not allowed by --allow-stream (replayer never touches it)"
        for arn in settings.watch_streams
        if not any(fnmatch.fnmatchcase(arn, p) for p in settings.allow_streams)
    ]
    if settings.rescue_at_risk and not any(uri.startswith(("s3://", "file:")) for uri in settings.to):
        problems.append(
            f"{r.source('rescue_at_risk')}: needs an s3://BUCKET[/PREFIX] or file:DIR --to to archive into"
        )
    return problems


# A consumer with no stream allowed would reject (and quarantine or leave) every message: refused.
_NO_STREAM_ALLOWED = (
    "--allow-stream (or REPLAYER_ALLOW_STREAMS) is required: the streams whose ranges may be read, "
    "e.g. --allow-stream 'arn:aws:dynamodb:*:*:table/orders/stream/*' ('*': every stream); "
    "without it every message would be rejected"
)


def _required(option: Option) -> str:
    where = f" (or {option.env})" if option.env else ""
    what = option.help.format(sinks=SINK_FORMS).split(". ")[0].rstrip(".")
    return f"{option.flag}{where} is required: {what[0].lower()}{what[1:]}"


def _problems(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} configuration problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _warnings(
    command: str, settings: Settings, durable_check: Callable[[Sequence[str]], bool] | None
) -> Iterable[str]:
    if command not in _CONSUMERS:
        return
    if durable_check is not None and not durable_check(settings.to):
        yield (
            "no --to sink keeps loss reports (only - or lambda:): ranges with lost records "
            "will never be deleted from the queue; add s3://BUCKET[/PREFIX] or file:DIR"
        )
    if command == "lambda" and not settings.failure_buckets:
        yield (
            "no --failure-bucket given: every S3 object an event names will be quarantined by reference, "
            "none is read (deny by default; '*' allows every bucket)"
        )


# ---- the docs' option table (docs/configuration.md)


def _default_text(option: Option, command: str) -> str:
    if option.metavar is None:
        return ""
    value = option.default(command)
    if option.name == "http_port" and value is None:
        return "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == ():
        return ""
    if option.name in ("expiry_warning", "at_risk_margin", "watch_interval"):
        return f"{value / 3600:g}h" if value % 3600 == 0 else f"{value:g}s"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text(option: Option, command: str, sinks: str = SINK_FORMS) -> str:
    """The option's help for `command`, in the one style: text, then [default: X]. Its variable is in
    the docs' option table (`--help` says so once, under the panels)."""
    default = _default_text(option, command)
    tail = f" [default: {default}]" if default else ""
    own = f" {option.only[command]}" if command in option.only else ""
    text = option.help.format(sinks=sinks)
    if option.panel == _REPAIR:  # the panel's title says it: lambda: sinks only
        text = re.sub(r"^lambda: sinks(: |, )", "", text)
        text = text[0].upper() + text[1:]
    return text + own + tail


def markdown_table(sinks: str = SINK_FORMS) -> str:
    """The docs' option table (docs/configuration.md): every option, its variable, defaults and commands."""
    lines = [
        "| option | environment variable | default | commands | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in OPTIONS:
        commands = [c for c in COMMANDS if c in o.commands]
        flags = ", ".join(f"`{f} {o.metavar}`" if o.metavar else f"`{f}`" for f in o.flags)
        if commands == ["lambda"]:
            flags = "(Lambda only)"
        texts = [_default_text(o, c) for c in commands]
        default = "; ".join(f"{c}: {t or 'unset'}" for c, t in zip(commands, texts, strict=True))
        if len(set(texts)) == 1:
            default = texts[0]
        meaning = (o.help + (f" {o.more}" if o.more else "")).format(sinks=sinks).replace("|", "\\|")
        meaning += "".join(f" {c}: {text[0].lower()}{text[1:]}" for c, text in o.only.items())
        if o.repeat and o.env:
            meaning += " The variable takes a comma- or space-separated list."
        env = f"`{o.env}`" if o.env else ""
        names = ", ".join("Lambda" if c == "lambda" else c for c in commands)
        lines.append(f"| {flags} | {env} | {default} | {names} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m replayer.config --markdown: the docs' option table
    import sys

    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m replayer.config --markdown")
    sys.stdout.write(markdown_table())
