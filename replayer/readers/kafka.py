"""Re-read a range of a Kafka topic-partition (Amazon MSK or self-managed Apache Kafka) with aiokafka.

Offsets first..last are read in order into Lambda's Kafka record shape (key and value base64, the
key left out when the record has none, headers as byte arrays, in order, repeats kept). Offsets
that are not there are reported exactly, never skipped: below the partition's log start
(retention, DeleteRecords) and holes inside the range (compaction; a transaction's marker also
takes an offset). Every read is bounded: the connection and each fetch by time, the range by its
records (its ceiling) and by its bytes, a page by the fetch size.

Brokers and credentials never come from the failure record: from `--kafka-brokers` (a glob on the
source: the MSK cluster ARN, or ``kafka://servers`` for self-managed Kafka; plaintext), else from
AWS: the mapping that gave up on the batch (its authentication and, self-managed, its
`SelfManagedEventSource` servers) and, for MSK, `kafka:GetBootstrapBrokers`. The record's
`bootstrapServers` is only compared with what is used, and a difference noted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.aws import Clients
from replayer.mappings import reads_source
from replayer.model import Failure, Gap, StreamKind, kafka_servers, parse_stream_arn
from replayer.readers._base import (
    DEFAULT_MAX_RECORDS_PER_RANGE,
    RangeCollector,
    ReadResult,
    over_ceiling_reason,
)
from replayer.wire import dumps, loads

__all__ = [
    "DEFAULT_MAX_RANGE_BYTES",
    "KafkaAuth",
    "KafkaEndpoint",
    "KafkaPayloadReader",
    "KafkaReader",
    "NoEndpoint",
    "auth_of_mapping",
    "client_options",
    "kafka_event_record",
    "kafka_payload",
    "msk_brokers",
    "msk_iam_token",
]

log = logs.get_logger(__name__)

DEFAULT_MAX_RANGE_BYTES = (
    64 * 1024 * 1024
)  # a range's records as events: past it, refused (Lambda's batch is 6 MB)
DEFAULT_FETCH_BYTES = 1024 * 1024  # one fetch (a page); a larger record still comes, alone
DEFAULT_RETENTION = timedelta(days=7)  # Kafka's default log.retention.hours; the topic's own is not asked
GONE_BELOW_LOG_START = "offsets before the partition's log start (removed by retention or DeleteRecords)"
GONE_INSIDE = "offsets not in the partition (removed by compaction, or taken by a transaction marker)"
_TIMESTAMP_TYPES = {0: "CREATE_TIME", 1: "LOG_APPEND_TIME"}


# ---- authentication: what the mapping uses, as aiokafka options


@dataclass(frozen=True, slots=True)
class KafkaAuth:
    """How to authenticate to a cluster, as its event source mapping does."""

    mechanism: str  # plaintext | iam | scram-256 | scram-512 | plain | tls
    secret_arn: str | None = None  # SASL credentials, or the mutual TLS client certificate and key
    ca_secret_arn: str | None = None  # a self-managed cluster's root CA (SERVER_ROOT_CA_CERTIFICATE)
    region: str | None = None  # where MSK IAM tokens are signed for

    @property
    def tls(self) -> bool:
        return self.mechanism != "plaintext"


PLAINTEXT = KafkaAuth("plaintext")
_SASL_SECRETS = {
    "SASL_SCRAM_512_AUTH": "scram-512",
    "SASL_SCRAM_256_AUTH": "scram-256",
    "BASIC_AUTH": "plain",
}


def auth_of_mapping(mapping: Mapping[str, Any], *, msk_region: str | None) -> KafkaAuth:
    """The authentication of an event source mapping (its `SourceAccessConfigurations`), as Lambda
    chooses it: a SASL secret, else a client certificate (mutual TLS), else for MSK IAM and for
    self-managed Kafka no authentication (plaintext unless a root CA asks for TLS)."""
    configs = {
        c.get("Type"): c.get("URI")
        for c in mapping.get("SourceAccessConfigurations") or ()
        if isinstance(c, Mapping) and isinstance(c.get("URI"), str)
    }
    ca = configs.get("SERVER_ROOT_CA_CERTIFICATE")
    for kind, mechanism in _SASL_SECRETS.items():
        if kind in configs:
            return KafkaAuth(mechanism, configs[kind], ca, msk_region)
    if "CLIENT_CERTIFICATE_TLS_AUTH" in configs:
        return KafkaAuth("tls", configs["CLIENT_CERTIFICATE_TLS_AUTH"], ca, msk_region)
    if msk_region is not None:
        return KafkaAuth("iam", None, ca, msk_region)
    return KafkaAuth("tls", None, ca) if ca else PLAINTEXT


def msk_brokers(answer: Mapping[str, Any], auth: KafkaAuth) -> tuple[str, ...] | None:
    """The broker string of a GetBootstrapBrokers answer that matches the authentication."""
    keys = {
        "iam": ("BootstrapBrokerStringSaslIam", "BootstrapBrokerStringPublicSaslIam"),
        "scram-512": ("BootstrapBrokerStringSaslScram", "BootstrapBrokerStringPublicSaslScram"),
        "scram-256": ("BootstrapBrokerStringSaslScram", "BootstrapBrokerStringPublicSaslScram"),
        "tls": ("BootstrapBrokerStringTls", "BootstrapBrokerStringPublicTls"),
    }.get(auth.mechanism, ("BootstrapBrokerString",))
    for key in keys:
        value = answer.get(key)
        if isinstance(value, str) and (servers := kafka_servers(value)):
            return servers
    return None


def client_options(
    auth: KafkaAuth,
    *,
    secret: Mapping[str, Any] | None = None,
    ca_pem: str | None = None,
    token_provider: Any = None,
) -> dict[str, Any]:
    """aiokafka client options for `auth`: the security protocol, SASL mechanism and credentials,
    and the TLS context (the system's trust store, or the cluster's own CA). `secret` is the
    mapping's Secrets Manager secret as stored (``username``/``password``, or ``certificate``,
    ``privateKey`` and optionally ``privateKeyPassword``); `token_provider` makes MSK IAM tokens."""
    if auth.mechanism == "plaintext":
        return {"security_protocol": "PLAINTEXT"}
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    options: dict[str, Any] = {"security_protocol": "SSL", "ssl_context": context}
    if auth.mechanism == "tls":
        if auth.secret_arn is not None:
            _load_client_certificate(context, _secret_fields(secret, "certificate", "privateKey"), secret)
        return options
    options["security_protocol"] = "SASL_SSL"
    if auth.mechanism == "iam":
        if token_provider is None:
            raise ValueError("MSK IAM authentication needs a token provider")
        options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=token_provider)
        return options
    username, password = _secret_fields(secret, "username", "password")
    mechanism = {"scram-512": "SCRAM-SHA-512", "scram-256": "SCRAM-SHA-256", "plain": "PLAIN"}[auth.mechanism]
    options.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    return options


def _secret_fields(secret: Mapping[str, Any] | None, *names: str) -> tuple[str, ...]:
    if secret is None or not all(isinstance(secret.get(n), str) and secret.get(n) for n in names):
        raise ValueError(f"the mapping's secret has no {' and '.join(names)}")
    return tuple(str(secret[n]) for n in names)


def _load_client_certificate(
    context: ssl.SSLContext, pem: tuple[str, ...], secret: Mapping[str, Any] | None
) -> None:
    """The certificate chain and key into `context` (ssl reads them from files only: a private
    temporary folder, removed at once)."""
    certificate, key = pem
    password = secret.get("privateKeyPassword") if secret else None
    with tempfile.TemporaryDirectory(prefix="replayer-tls-") as folder:
        cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_file.write_text(certificate)
        key_file.write_text(key)
        key_file.chmod(0o600)
        context.load_cert_chain(cert_file, key_file, password=password if isinstance(password, str) else None)


MSK_TOKEN_SECONDS = 900  # what AWS's own signer library gives a token


def msk_iam_token(region: str, credentials: Any) -> tuple[str, float]:
    """An MSK IAM authentication token and when it expires (epoch seconds): a SigV4-presigned
    ``GET https://kafka.REGION.amazonaws.com/?Action=kafka-cluster:Connect``, base64url without
    padding, as aws-msk-iam-sasl-signer-python makes it (a test compares the two). Made here with
    botocore so the Lambda zip carries no second signer and its command-line dependencies."""
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(
        method="GET", url=f"https://kafka.{region}.amazonaws.com/", params={"Action": "kafka-cluster:Connect"}
    )
    SigV4QueryAuth(credentials, "kafka-cluster", region, expires=MSK_TOKEN_SECONDS).add_auth(request)
    request.params = {"User-Agent": "lambda-stream-replayer"}
    url = str(request.prepare().url)
    token = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    return token, time.time() + MSK_TOKEN_SECONDS


class MskTokens:
    """MSK IAM tokens (SASL/OAUTHBEARER for aiokafka), signed with the default credentials, reused
    until a minute before they expire."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._token: tuple[str, float] | None = None

    async def token(self) -> str:
        if self._token is None or self._token[1] - time.time() < 60:
            self._token = await asyncio.to_thread(self._sign)
        return self._token[0]

    def _sign(self) -> tuple[str, float]:
        import botocore.session

        credentials = botocore.session.get_session().get_credentials()
        if credentials is None:
            raise NoEndpoint("no AWS credentials to sign MSK IAM tokens with")
        return msk_iam_token(self.region, credentials.get_frozen_credentials())

    def extensions(self) -> dict[str, str]:
        return {}


# ---- where a source's brokers are


@dataclass(frozen=True, slots=True)
class KafkaEndpoint:
    """The brokers of a source and how to authenticate to them, and where that was found."""

    servers: tuple[str, ...]
    auth: KafkaAuth = PLAINTEXT
    found_in: str = "--kafka-brokers"
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)


class NoEndpoint(Exception):
    """No brokers could be found for a source: configuration or the mapping is missing."""


# ---- the record shape


def kafka_event_record(message: Any) -> bytes:
    """One consumed record as Lambda's Kafka event carries it (JSON bytes)."""
    record: dict[str, Any] = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": message.timestamp,
        "timestampType": _TIMESTAMP_TYPES.get(message.timestamp_type, "CREATE_TIME"),
    }
    if message.key is not None:
        record["key"] = base64.b64encode(message.key).decode()
    record["value"] = base64.b64encode(message.value or b"").decode()  # a tombstone: empty
    record["headers"] = [{name: list(value or b"")} for name, value in message.headers]
    return dumps(record)


# ---- the reader


class KafkaReader:
    """Reads Kafka ranges (one topic-partition, offsets first..last) into Lambda-event-shaped records.

    Keyword-only settings: `brokers` (``(source glob, servers)`` pairs from `--kafka-brokers`,
    first match wins), `ceiling(failure)` the most records a range may hold, `max_range_bytes`
    the most bytes of events it may hold (past either it is refused), `fetch_bytes` one fetch,
    `poll_seconds` one fetch's wait, `max_empty_polls` fetches in a row that bring nothing before
    the range is given up for now (retried), `connect_seconds` the connection's set-up.
    """

    def __init__(
        self,
        clients: Clients,
        *,
        brokers: Sequence[tuple[str, tuple[str, ...]]] = (),
        ceiling: Callable[[Failure], int] = lambda failure: DEFAULT_MAX_RECORDS_PER_RANGE,
        max_range_bytes: int = DEFAULT_MAX_RANGE_BYTES,
        fetch_bytes: int = DEFAULT_FETCH_BYTES,
        poll_seconds: float = 2.0,
        max_empty_polls: int = 5,
        max_restarts: int = 5,
        connect_seconds: float = 30.0,
    ) -> None:
        self._clients = clients
        self.brokers = tuple(brokers)
        self.ceiling = ceiling
        self.max_range_bytes = max_range_bytes
        self.fetch_bytes = fetch_bytes
        self.poll_seconds = poll_seconds
        self.max_empty_polls = max_empty_polls
        self.max_restarts = max_restarts
        self.connect_seconds = connect_seconds

    async def retention(self, failure: Failure) -> timedelta:
        return DEFAULT_RETENTION

    def configured(self, source: str) -> tuple[str, ...] | None:
        """The `--kafka-brokers` servers whose glob matches the source, or None."""
        for glob, servers in self.brokers:
            if fnmatch.fnmatchcase(source, glob):
                return servers
        return None

    async def cluster_endpoint(self, source: str) -> KafkaEndpoint:
        """A cluster's own brokers (a dead-letter topic's, which no mapping reads): `--kafka-brokers`,
        else for MSK `kafka:GetBootstrapBrokers` with IAM authentication."""
        servers = self.configured(source)
        if servers is not None:
            return KafkaEndpoint(servers)
        parsed = parse_stream_arn(source)
        if parsed is None or parsed.kind is not StreamKind.KAFKA:
            raise NoEndpoint(f"no --kafka-brokers entry matches {source}")
        auth = KafkaAuth("iam", region=parsed.region)
        kafka = await self._clients.get("kafka", parsed.region, parsed.account)
        servers = msk_brokers(await kafka.get_bootstrap_brokers(ClusterArn=source), auth)
        if not servers:
            raise NoEndpoint(f"kafka:GetBootstrapBrokers names no IAM brokers for {source}")
        options = client_options(auth, token_provider=MskTokens(parsed.region))
        return KafkaEndpoint(servers, auth, "kafka:GetBootstrapBrokers", options)

    async def endpoint(self, failure: Failure) -> KafkaEndpoint:
        """Where to read the failure's cluster: configuration first, else the mapping and MSK."""
        servers = self.configured(failure.stream_arn)
        if servers is not None:
            return KafkaEndpoint(servers)
        return await self._from_aws(failure)

    async def _from_aws(self, failure: Failure) -> KafkaEndpoint:
        if failure.source_arn is None:
            raise NoEndpoint(
                f"no --kafka-brokers entry matches {failure.stream_arn}, and the record names no function "
                "whose mapping would tell its brokers"
            )
        mapping = await self._mapping(failure)
        region = None if failure.self_managed else failure.arn.region
        auth = auth_of_mapping(mapping, msk_region=region)
        secret = await self._secret(failure, auth.secret_arn) if auth.secret_arn else None
        ca_secret = await self._secret(failure, auth.ca_secret_arn) if auth.ca_secret_arn else None
        ca_pem = ca_secret.get("certificate") if ca_secret else None
        tokens = MskTokens(region) if auth.mechanism == "iam" and region else None
        options = client_options(
            auth, secret=secret, ca_pem=ca_pem if isinstance(ca_pem, str) else None, token_provider=tokens
        )
        if failure.self_managed:
            endpoints = (mapping.get("SelfManagedEventSource") or {}).get("Endpoints") or {}
            listed = endpoints.get("KAFKA_BOOTSTRAP_SERVERS") or []
            servers = kafka_servers(",".join(s for s in listed if isinstance(s, str)))
            found_in = "the mapping's SelfManagedEventSource"
        else:
            kafka = await self._clients.get("kafka", failure.arn.region, failure.arn.account)
            servers = msk_brokers(await kafka.get_bootstrap_brokers(ClusterArn=failure.stream_arn), auth)
            found_in = "kafka:GetBootstrapBrokers"
        if not servers:
            raise NoEndpoint(f"{found_in} names no brokers for {auth.mechanism} authentication")
        return KafkaEndpoint(servers, auth, found_in, options)

    async def _mapping(self, failure: Failure) -> Mapping[str, Any]:
        """The function's Kafka event source mapping that reads the range's cluster and topic."""
        function = failure.source_arn or ""
        # Where the cluster is (MSK), or our own account and region (self-managed): never where the
        # record's functionArn says (a message never picks the account, region or role).
        if failure.self_managed:
            client = await self._clients.get("lambda")
        else:
            client = await self._clients.get("lambda", failure.arn.region, failure.arn.account)
        kwargs: dict[str, Any] = {"FunctionName": function}
        if not failure.self_managed:
            kwargs["EventSourceArn"] = failure.stream_arn
        marker: str | None = None
        for _ in range(100):  # pages of mappings of one function: bounded
            page = await client.list_event_source_mappings(**kwargs, **({"Marker": marker} if marker else {}))
            for mapping in page.get("EventSourceMappings", []):
                if failure.topic in (mapping.get("Topics") or []) and reads_source(
                    mapping, failure.stream_arn
                ):
                    return dict(mapping)
            marker = page.get("NextMarker")
            if not marker:
                break
        raise NoEndpoint(
            f"no event source mapping of {function} reads {failure.topic} on {failure.stream_arn}"
        )

    async def _secret(self, failure: Failure, arn: str) -> Mapping[str, Any]:
        parts = arn.split(":")
        region, account = (parts[3], parts[4]) if len(parts) > 4 else (None, None)
        client = await self._clients.get("secretsmanager", region, account)
        answer = await client.get_secret_value(SecretId=arn)
        value = loads(answer.get("SecretString") or "{}")
        if not isinstance(value, dict):
            raise NoEndpoint(f"secret {arn} is not a JSON object")
        return value

    async def read(self, failure: Failure) -> ReadResult:
        if failure.kind is not StreamKind.KAFKA or failure.topic is None or failure.partition is None:
            raise ValueError("the Kafka reader reads Kafka ranges only")
        books = RangeCollector(failure, ceiling=self.ceiling(failure))
        try:
            endpoint = await self.endpoint(failure)
        except (NoEndpoint, ValueError) as exc:
            books.notes.append(f"cannot reach the cluster: {exc}")
            return books.result(complete=False)
        except (ClientError, BotoCoreError) as exc:
            books.notes.append(f"looking up the cluster failed: {exc}")
            return books.result(complete=False)
        if failure.bootstrap_servers:
            named = kafka_servers(failure.bootstrap_servers)
            if named is not None and not set(named) & set(endpoint.servers):
                books.notes.append(
                    f"the record names brokers {','.join(named)}; read from {','.join(endpoint.servers)} "
                    f"({endpoint.found_in})"
                )
        return await _PartitionRead(self, failure, endpoint, books).run()


class _PartitionRead:
    """One range's read: a consumer assigned the one partition, from the range's first offset on."""

    def __init__(
        self, reader: KafkaReader, failure: Failure, endpoint: KafkaEndpoint, books: RangeCollector
    ) -> None:
        from aiokafka import TopicPartition

        self.reader, self.failure, self.endpoint, self.books = reader, failure, endpoint, books
        self.tp = TopicPartition(failure.topic, failure.partition)
        self.bytes = 0
        self.next = failure.start  # the next offset of the range expected

    async def run(self) -> ReadResult:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        reader = self.reader
        consumer = AIOKafkaConsumer(
            bootstrap_servers=list(self.endpoint.servers),
            client_id="replayer",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",  # never jump elsewhere silently: out of range is handled here
            fetch_max_bytes=reader.fetch_bytes,
            max_partition_fetch_bytes=reader.fetch_bytes,
            request_timeout_ms=int(max(reader.connect_seconds, reader.poll_seconds * 2) * 1000),
            **self.endpoint.options,
        )
        try:
            async with asyncio.timeout(reader.connect_seconds):
                await consumer.start()
                if not await self._exists(consumer):
                    return self.books.result()
            return await self._read(consumer)
        except (KafkaError, OSError, TimeoutError) as exc:
            self.books.notes.append(f"reading {self.failure.shard_id} failed: {type(exc).__name__}: {exc}")
            return self.books.result(complete=False)
        finally:
            await consumer.stop()

    async def _exists(self, consumer: Any) -> bool:
        """False (the range refused: nothing there was ever lost) when the topic or partition does not exist."""
        topics = await consumer.topics()
        partitions = (
            consumer.partitions_for_topic(self.failure.topic) if self.failure.topic in topics else None
        )
        if partitions is None or self.failure.partition not in partitions:
            what = "topic" if partitions is None else "partition"
            self.books.refused = f"no such {what}: {self.failure.shard_id} on {self.failure.stream_arn}"
            self.books.done = True
            return False
        consumer.assign([self.tp])
        return True

    async def _bounds(self, consumer: Any) -> tuple[int, int]:
        tp = self.tp
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        return start, end

    async def _read(self, consumer: Any) -> ReadResult:
        from aiokafka.errors import OffsetOutOfRangeError

        books, failure, reader = self.books, self.failure, self.reader
        log_start, _ = await self._bounds(consumer)
        self._gone_below(log_start)
        restarts = empty = 0
        while not books.done and self.next <= failure.end:
            consumer.seek(self.tp, self.next)
            try:
                batch = await consumer.getmany(
                    self.tp, timeout_ms=int(reader.poll_seconds * 1000), max_records=books.page_limit(1000)
                )
            except OffsetOutOfRangeError:  # the log start moved past where this read stands
                restarts += 1
                if restarts > reader.max_restarts:
                    books.notes.append(f"gave up after {restarts - 1} log start moves while reading")
                    return books.result(complete=False)
                self._gone_below((await self._bounds(consumer))[0])
                continue
            messages = batch.get(self.tp, [])
            if not messages:
                position = await consumer.position(self.tp)
                if position > self.next:  # the fetch stepped over offsets with no record (markers, holes)
                    self._missing(position, GONE_INSIDE)
                    self.next = position
                    continue
                high = (await self._bounds(consumer))[1]
                if self.next >= high:
                    # Read to the partition's end before the range's: offsets at or past the end were
                    # never written, and no genuine batch names them. (Asked only now: some brokers
                    # answer a log end short of records they do return.)
                    books.refuse(f"the partition's end offset is {high}, the range ends at {failure.end}")
                    return books.result()
                empty += 1
                if empty >= reader.max_empty_polls:
                    books.notes.append(
                        f"gave up after {empty} empty fetches at offset {self.next}; will retry"
                    )
                    return books.result(complete=False)
                continue
            empty = 0
            for message in messages:
                if self._take(message):
                    break
            else:
                self.next = max(self.next, messages[-1].offset + 1)
        if not books.done:  # read past the range's end: what did not come is not there
            self._missing(failure.end + 1, GONE_INSIDE)
            books.done = True
        return books.result()

    def _missing(self, before: int, reason: str) -> None:
        """Offsets from the next expected one up to `before` (exclusive; at most the range's end) are gone."""
        last = min(before - 1, self.failure.end)
        if self.next <= last:
            self.books.gaps.append(Gap(str(self.next), str(last), reason))
        self.next = max(self.next, last + 1)

    def _gone_below(self, log_start: int) -> None:
        """The partition now starts at `log_start`: the offsets of the range before it are gone."""
        self._missing(log_start, GONE_BELOW_LOG_START)
        self.next = max(self.next, log_start)

    def _take(self, message: Any) -> bool:
        """One record to the books (a hole before it reported first); True once the range is done."""
        books, failure, offset = self.books, self.failure, message.offset
        if offset < self.next:
            return False  # before the range, or read again
        if offset > failure.end:
            self._missing(failure.end + 1, GONE_INSIDE)
            books.done = True
            return True
        if (
            len(books.records) >= books.ceiling
        ):  # as the streams' books refuse it (the core judges it per claim)
            books.refused = over_ceiling_reason(failure, books.ceiling)
            books.over, books.done = books.ceiling, True
            return True
        event = kafka_event_record(message)
        self.bytes += len(event)
        if self.bytes > self.reader.max_range_bytes:
            books.refuse(
                f"more than {self.reader.max_range_bytes} bytes of records before offset {failure.end}"
            )
            return True
        self._missing(offset, GONE_INSIDE)
        books.records.add(str(offset), event)
        books.last, self.next = offset, offset + 1
        if offset == failure.end:
            books.done = True
        return books.done


# ---- records an S3 or Kafka-topic destination carried inline


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _payload_record(record: Mapping[str, Any], failure: Failure) -> tuple[int, bytes] | str:
    """A payload record re-made in the event shape from its checked fields, or why it cannot be."""
    offset, timestamp = record.get("offset"), record.get("timestamp")
    if record.get("topic") != failure.topic or record.get("partition") != failure.partition:
        return "a record of another topic-partition"
    if not isinstance(offset, int) or isinstance(offset, bool) or not failure.start <= offset <= failure.end:
        return "a record outside the range"
    key, value = record.get("key"), _b64(record.get("value"))
    if value is None or (key is not None and _b64(key) is None):
        return f"record {offset}'s key or value is not base64"
    headers = record.get("headers", [])
    if not isinstance(headers, list) or not all(
        isinstance(h, Mapping)
        and all(
            isinstance(v, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in v) for v in h.values()
        )
        for h in headers
    ):
        return f"record {offset}'s headers are not byte arrays"
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        return f"record {offset} has no timestamp"
    event: dict[str, Any] = {
        "topic": failure.topic,
        "partition": failure.partition,
        "offset": offset,
        "timestamp": timestamp,
        "timestampType": str(record.get("timestampType") or "CREATE_TIME"),
    }
    if key is not None:
        event["key"] = key
    event["value"] = record["value"]
    event["headers"] = [dict(h) for h in headers]
    return offset, dumps(event)


def kafka_payload(failure: Failure) -> list[tuple[int, bytes]] | str:
    """The inline payload's records of the range, in offset order, when it is exactly the range's part
    of the batch (first at the first offset, last at the last, none twice); else why not."""
    records: list[tuple[int, bytes]] = []
    for record in failure.payload or ():
        made = _payload_record(record, failure)
        if isinstance(made, str):
            return made
        records.append(made)
    records.sort()
    offsets = [offset for offset, _ in records]
    if not offsets:
        return "it holds no record of the range"
    if len(set(offsets)) != len(offsets):
        return "it holds a record twice"
    if offsets[0] != failure.start or offsets[-1] != failure.end:
        return "its first and last records are not the range's first and last offsets"
    return records


class KafkaPayloadReader:
    """Serves a Kafka range from its inline payload (checked by `kafka_payload` first)."""

    async def retention(self, failure: Failure) -> timedelta:
        return timedelta.max  # the records live in the destination, not the topic

    async def read(self, failure: Failure) -> ReadResult:
        books = RangeCollector(failure)
        made = kafka_payload(failure)
        for offset, event in made if not isinstance(made, str) else ():
            books.records.add(str(offset), event)
            books.last = offset
        books.done = True
        return books.result()
