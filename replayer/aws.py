"""The one place that creates AWS clients.

Clients are created once per (service, region), reused for the life of the process and
closed together. Region, credentials and endpoint come from the standard AWS
environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles); retries of throttling and 5xx
are botocore's own (standard mode), so no other layer retries the same call.

A resource in another account (a stream, a function) is reached through the role
`--assume-role` names for that account: its clients sign with STS AssumeRole credentials,
refreshed by botocore's own machinery before they expire. The account the process runs in,
and any account without a role, use the default credentials.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import inspect
import os
import re
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.handlers import add_expect_header

__all__ = [
    "ANSWER_TOO_LARGE",
    "DEFAULT_CALL_DEADLINE",
    "MAX_ANSWER_BYTES",
    "AssumeRoles",
    "CallDeadlineError",
    "Clients",
    "RAW_BODY",
    "SqsQueue",
    "default_region",
    "error_code",
]

# Key under which a raw JSON response body is handed back for the operations below.
RAW_BODY = "ReplayerRawBody"

# GetRecords answers are parsed by us, not botocore: its parser costs several times what
# json.loads does, and the raw JSON is already the shape a Lambda event carries
# (attribute values as on the wire, epoch-second timestamps, base64 binaries).
_RAW_OPERATIONS = (
    "before-parse.dynamodb-streams.GetRecords",
    "before-parse.kinesis.GetRecords",
)


# A synchronous Invoke answers when the function returns, up to its 900 s timeout: a shorter
# read timeout would make botocore re-send the Invoke while the first call is still running.
_SERVICE_CONFIG = {"lambda": Config(read_timeout=910)}


# Shared by every client of the process: botocore's data (endpoints.json, service models, endpoint
# rules), read once per process, not once per SDK session; and TLS contexts, one per trust set-up.
_LOADERS: dict[str | None, Any] = {}
_TLS_CONTEXTS: dict[tuple[Any, ...], ssl.SSLContext] = {}


def sdk_loader(data_path: str | None = None) -> Any:
    """botocore's data loader for `data_path` (the `AWS_DATA_PATH` form; None: botocore's own
    data), one per process and decoding with orjson: every SDK session and client shares what it
    read. What it yields equals botocore's own loader's (tests/test_aws.py)."""
    if data_path not in _LOADERS:
        from botocore.exceptions import DataNotFoundError
        from botocore.loaders import JSONFileLoader, Loader, instance_cache

        class OrjsonFileLoader(JSONFileLoader):  # type: ignore[misc]  # botocore ships no type hints
            """JSONFileLoader with orjson: botocore's json.loads with OrderedDict hooks costs ~10x
            (endpoints.json alone is 1.2 MB); its models rebuild their own ordered maps anyway."""

            def _load_file(self, full_path: str, open_method: Any) -> Any:
                if not os.path.isfile(full_path):
                    return None
                with open(full_path, "rb") as fp:
                    payload = fp.read()
                if full_path.endswith(".gz"):
                    payload = gzip.decompress(payload)
                try:
                    return orjson.loads(payload)
                except orjson.JSONDecodeError:  # what orjson refuses (integers past 64 bits), json reads
                    return super()._load_file(full_path, open_method)

        # As botocore's create_loader reads AWS_DATA_PATH: extra directories searched first.
        search = (
            [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
            if data_path
            else None
        )

        class SharedLoader(Loader):  # type: ignore[misc]  # botocore ships no type hints
            @instance_cache  # type: ignore[untyped-decorator]  # as botocore caches its own
            def load_service_model(
                self, service_name: str, type_name: str, api_version: str | None = None
            ) -> Any:
                """botocore's, without first walking every service directory of the data path (~400,
                per model type; ~40 ms) to learn that the service asked for is there."""
                try:
                    self.list_api_versions(service_name, type_name)  # its own directory: known or not
                except DataNotFoundError:  # not known: botocore's way, and its UnknownServiceError
                    return super().load_service_model(service_name, type_name, api_version)
                if api_version is None:
                    api_version = self.determine_latest_version(service_name, type_name)
                model = self.load_data(os.path.join(service_name, api_version, type_name))
                self._extras_processor.process(model, self._find_extras(service_name, type_name, api_version))
                if type_name == "service-2":
                    try:
                        rules = self.load_service_model(service_name, "endpoint-rule-set-1", api_version)
                    except DataNotFoundError:
                        return model
                    model = without_unread_context_params(model, rules)
                return model

        _LOADERS[data_path] = SharedLoader(extra_search_paths=search, file_loader=OrjsonFileLoader())
    return _LOADERS[data_path]


# A rule set's references to its parameters: {"ref": "Bucket"}, and "{Bucket}" / "{Bucket#path}" in templates.
_PARAMETER_REFERENCE = re.compile(rb'"ref":"([^"]+)"|\{([A-Za-z0-9_]+)[#}]')


def without_unread_context_params(model: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """`model` without the endpoint context parameters its rule set declares but no rule reads.

    botocore passes each one to endpoint resolution, whose cache is keyed on every value passed:
    S3's `Key` (declared, read by no rule) made every object call resolve its endpoint anew
    (~0.3 ms of CPU). A parameter no rule reads cannot change an endpoint; one that a later
    rule set reads is kept, as this is worked out from the rule set loaded with the model.
    """
    read = {(a or b).decode() for a, b in _PARAMETER_REFERENCE.findall(orjson.dumps(rules.get("rules", [])))}
    unread = set(rules.get("parameters", {})) - read
    if not unread:
        return model
    for shape in model.get("shapes", {}).values():
        for member in shape.get("members", {}).values():
            if member.get("contextParam", {}).get("name") in unread:
                del member["contextParam"]
    return model


def _new_session() -> Any:
    """An aiobotocore session reading botocore's data through the process's shared loader."""
    from aiobotocore.session import get_session

    session = get_session()
    session.register_component("data_loader", sdk_loader(session.get_config_variable("data_path")))
    return session


def _tls_context(ca_bundle: str, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """One TLS context per (CA bundle, client certificate), made as aiobotocore makes its own and
    never changed after: loading a CA bundle costs ~15 ms of CPU, and aiobotocore loads it per client."""
    try:
        stat = os.stat(ca_bundle)
        version: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)  # a bundle replaced is read again
    except OSError:
        version = (0, 0)  # loading it below raises, as aiobotocore's own would
    key = (ca_bundle, version, cert_file, key_file)
    if key not in _TLS_CONTEXTS:
        from botocore.httpsession import create_urllib3_context

        context = create_urllib3_context()
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(ca_bundle, None, None)
        _TLS_CONTEXTS[key] = context
    return _TLS_CONTEXTS[key]


# The most bytes a GetRecords answer may hold: the stream's documented maximum of a call (DynamoDB
# Streams 1 MB of records, Kinesis 10 MiB), with room for the JSON around the records (attribute
# type names; base64, 4/3). A larger answer is no stream's: it is refused, read no further than this.
MAX_ANSWER_BYTES = {
    "DynamoDBStreams_20120810.GetRecords": 4 * 1024 * 1024,
    "Kinesis_20131202.GetRecords": 16 * 1024 * 1024,
}
ANSWER_TOO_LARGE = "ReplayerAnswerTooLarge"  # the error code of such an answer (never retried)


async def _capped_body(raw: Any, cap: int) -> bytes | None:
    """The aiohttp response's body, or None (left unread) once it holds more than `cap` bytes."""
    if raw.content_length is not None:  # what AWS sends: the length says it all, aiohttp reads it whole
        return None if raw.content_length > cap else bytes(await raw.read())
    chunks, size = [], 0
    async for chunk in raw.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(url: str, cap: int) -> Any:
    """An AWS-shaped error answer saying the real one held more than `cap` bytes."""
    from aiobotocore.awsrequest import AioAWSResponse

    body = orjson.dumps(
        {
            "__type": ANSWER_TOO_LARGE,
            "message": f"the answer holds more than {cap} bytes, more than the stream's documented "
            "maximum of a GetRecords call allows",
        }
    )
    headers = {"content-type": "application/x-amz-json-1.1", "x-amzn-errortype": ANSWER_TOO_LARGE}
    answer = AioAWSResponse(url, 400, headers, None)
    answer._content = body
    return answer


@functools.cache
def _http_session_cls() -> type:
    """aiobotocore's HTTP session, with the TLS context shared between clients of the same trust
    set-up (a custom CA bundle or client certificate gets its own; proxies keep aiobotocore's way)."""
    import aiohttp
    from aiobotocore.httpsession import AIOHTTPSession
    from botocore.exceptions import ConnectionClosedError
    from botocore.httpsession import get_cert_path

    class SharedTLSSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore ships no type hints
        async def send(self, request: Any) -> Any:
            """aiobotocore's, with a GetRecords answer's body read up to its cap (`MAX_ANSWER_BYTES`)."""
            target = request.headers.get("X-Amz-Target")
            cap = MAX_ANSWER_BYTES.get(target.decode() if isinstance(target, bytes) else str(target))
            if cap is None:
                return await super().send(request)
            streamed, request.stream_output = request.stream_output, True  # its body is read here
            try:
                answer = await super().send(request)
            finally:
                request.stream_output = streamed
            try:
                body = await _capped_body(answer.raw, cap)
            except (aiohttp.ClientError, TimeoutError) as exc:
                answer.raw.close()
                raise ConnectionClosedError(error=exc, request=request, endpoint_url=request.url) from exc
            if body is None:
                answer.raw.close()  # the connection goes; the rest is never read
                return _too_large(request.url, cap)
            answer.raw.release()
            answer._content = body
            return answer

        def _create_connector(self, proxy_url: str | None) -> Any:
            ca_bundle = get_cert_path(self._verify) if self._verify else None
            if proxy_url or not ca_bundle:
                return super()._create_connector(proxy_url)
            return aiohttp.TCPConnector(
                limit=self._max_pool_connections,
                ssl=_tls_context(ca_bundle, self._cert_file, self._key_file),
                **self._connector_args,
            )

    return SharedTLSSession


def _keep_raw_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    if response_dict.get("status_code") == 200 and isinstance(response_dict.get("body"), bytes):
        customized_response_dict[RAW_BODY] = response_dict["body"]
        response_dict["body"] = b"{}"


def _env_attempts() -> int:
    """`AWS_MAX_ATTEMPTS` when set (the standard variable), else 6."""
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS", "6")))
    except ValueError:
        return 6


def error_code(exc: ClientError) -> str:
    """AWS's error code of a failed call ("" when it has none)."""
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


class CallDeadlineError(BotoCoreError):  # type: ignore[misc]  # botocore ships no type hints
    """An AWS call got no complete answer within its total deadline (a transient failure)."""

    fmt = "{operation}: no answer within {seconds:g} s (connection set-up, retries and waits included)"


class _Deadlined:
    """An aiobotocore client whose every call ends within `deadline` seconds, whatever the
    network does: botocore's timeouts bound each socket wait, not a call (a peer that reads
    the request and never answers, a stalled TLS handshake, retries piling up)."""

    def __init__(self, client: Any, service: str, deadline: float) -> None:
        self._client = client
        self._service = service
        self._deadline = deadline
        self.meta = client.meta

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return self._bounded(name, result) if inspect.isawaitable(result) else result

        return call

    async def _bounded(self, name: str, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._deadline):
                return await call
        except TimeoutError:
            raise CallDeadlineError(operation=f"{self._service}.{name}", seconds=self._deadline) from None


@dataclass(frozen=True, slots=True)
class AssumeRoles:
    """Which role to assume for a resource in another account: one per account, else the template's."""

    by_account: tuple[tuple[str, str], ...] = ()
    template: str | None = None

    @classmethod
    def of(cls, specs: Iterable[str]) -> AssumeRoles:
        """From `--assume-role` values (ValueError on one that is neither form, or two templates)."""
        from replayer.config import assume_role_problem

        by_account: dict[str, str] = {}
        template = None
        for spec in specs:
            if problem := assume_role_problem(spec):
                raise ValueError(problem)
            if "=" in spec:
                account, _, role = spec.partition("=")
                by_account[account] = role
            elif template is not None and template != spec:
                raise ValueError(f"two role ARN templates: {template!r} and {spec!r}")
            else:
                template = spec
        return cls(tuple(sorted(by_account.items())), template)

    def role_for(self, account: str, own_account: str | None) -> str | None:
        """The role for `account`; None when the default credentials serve it."""
        if account == own_account:
            return None
        for known, role in self.by_account:
            if known == account:
                return role
        return self.template.replace("{account}", account) if self.template else None


DEFAULT_CALL_DEADLINE = 120.0  # seconds per AWS call, every attempt and wait included
DEFAULT_MAX_CLIENTS = 32  # (service, region, role) triples kept; regions come from configuration anyway
_LAMBDA_INVOKE_ALLOWANCE = 900.0  # a synchronous Invoke answers when the function returns


class Clients:
    """Lazily created, shared aiobotocore clients (aioboto3's own), keyed by (service, region,
    role): `assume_roles` says which role serves a resource's account (default: none).

    `max_attempts` counts every attempt of a call, the first included, as the standard
    `AWS_MAX_ATTEMPTS` does (default: that variable, else 6). Every call ends within
    `call_deadline` seconds (Lambda's: 900 s more), and S3 uploads are sent without
    `Expect: 100-continue` (our bodies are small; a peer that never answers the expectation
    would hold the call). At most `max_clients` clients are kept: the least recently used
    one is closed once any call it was making is past its deadline.

    Use as ``async with Clients(...) as clients: s3 = await clients.get("s3")``.
    """

    def __init__(
        self,
        *,
        max_pool_connections: int = 32,
        max_attempts: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        call_deadline: float = DEFAULT_CALL_DEADLINE,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        assume_roles: AssumeRoles | None = None,
    ) -> None:
        self.assume_roles = assume_roles or AssumeRoles()
        # role ARN -> SDK session signing with its credentials (bounded as the clients are: a session
        # holds no connection, and the clients made from it are closed with the client cache)
        self._role_sessions: OrderedDict[str, Any] = OrderedDict()
        self._own_account: str | None = None
        self._session: Any = None  # made with the first client: the SDK loads only when a call is made
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts or _env_attempts()},
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tcp_keepalive=True,
            # Per request, botocore otherwise re-sanitizes its whole User-Agent string character by
            # character and computes a CRC32 of every body: together about a fifth of the client
            # CPU of a call (bench/requests.py). Integrity: TLS on the wire, and the archive's own
            # SHA-256 digests, read back and compared.
            user_agent="replayer",  # not its version: importlib.metadata costs ~50 ms at start-up
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.call_deadline = call_deadline
        self.max_clients = max(1, max_clients)
        # (service, region, role or None) -> (client, its context manager)
        self._clients: OrderedDict[tuple[str, str, str | None], tuple[Any, Any]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @property
    def count(self) -> int:
        """How many clients are open now."""
        return len(self._clients)

    async def get(self, service: str, region: str | None = None, account: str | None = None) -> Any:
        """The client for `service` in `region` (default: the environment's region), signing with
        the role configured for `account` when it is another account than ours."""
        role = await self._role_for(account) if account else None
        key = (service, region or default_region(), role)
        if key in self._clients:
            self._clients.move_to_end(key)
            return self._clients[key][0]
        async with self._lock:
            if key not in self._clients:
                config = self._aio_config(service)
                session = self._role_session(role) if role else self._sdk()
                manager = session.create_client(service, region_name=key[1], config=config)
                client = await manager.__aenter__()
                for event in _RAW_OPERATIONS:
                    client.meta.events.register(event, _keep_raw_body)
                client.meta.events.unregister("before-call.s3", add_expect_header)
                deadline = self.call_deadline + (_LAMBDA_INVOKE_ALLOWANCE if service == "lambda" else 0.0)
                self._clients[key] = (_Deadlined(client, service, deadline), manager)
                while len(self._clients) > self.max_clients:
                    self._retire(*self._clients.popitem(last=False)[1])
            return self._clients[key][0]

    async def _role_for(self, account: str) -> str | None:
        roles = self.assume_roles
        if not roles.template and all(known != account for known, _ in roles.by_account):
            return None  # no role for it: nothing to ask STS
        if self._own_account is None:
            # Our own account needs no role, even when a template (or a mapping) names one for it.
            async with self._sdk().create_client(
                "sts", region_name=default_region(), config=self._aio_config("sts")
            ) as sts:
                self._own_account = str((await sts.get_caller_identity())["Account"])
        return roles.role_for(account, self._own_account)

    def _role_session(self, role: str) -> Any:
        """An SDK session whose clients sign with `role`'s credentials, assumed with the default
        ones and refreshed (by botocore, shortly before they expire) for every client it makes."""
        if role in self._role_sessions:
            self._role_sessions.move_to_end(role)
        else:
            from aiobotocore.credentials import (
                AioAssumeRoleCredentialFetcher,
                AioCredentialResolver,
                AioDeferredRefreshableCredentials,
            )
            from botocore.credentials import CredentialProvider

            source = self._sdk()

            def sts_client(service: str, **kwargs: Any) -> Any:
                return source.create_client(
                    service, region_name=default_region(), config=self._aio_config(service), **kwargs
                )

            class _Credentials:
                """The default credentials, read once the role is first needed."""

                async def get_frozen_credentials(self) -> Any:
                    credentials = await source.get_credentials()
                    if credentials is None:
                        raise RuntimeError("no default AWS credentials to assume a role with")
                    return await credentials.get_frozen_credentials()

            fetcher = AioAssumeRoleCredentialFetcher(
                client_creator=sts_client,
                source_credentials=_Credentials(),
                role_arn=role,
                extra_args={"RoleSessionName": "replayer"},
            )
            credentials = AioDeferredRefreshableCredentials(
                refresh_using=fetcher.fetch_credentials, method="assume-role"
            )

            class _Provider(CredentialProvider):  # type: ignore[misc]  # botocore ships no type hints
                METHOD = "replayer-assume-role"

                async def load(self) -> Any:
                    return credentials

            session = _new_session()
            session.register_component("credential_provider", AioCredentialResolver([_Provider()]))
            self._role_sessions[role] = session
            while len(self._role_sessions) > self.max_clients:
                self._role_sessions.popitem(last=False)
        return self._role_sessions[role]

    def _retire(self, client: _Deadlined, manager: Any) -> None:
        """Close an evicted client once any call it was making is over (past its deadline)."""

        async def later() -> None:
            try:
                await asyncio.sleep(client._deadline)
            finally:
                await manager.__aexit__(None, None, None)

        task = asyncio.create_task(later())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def has_credentials(self) -> bool:
        """True when the standard chain (environment, profile, role) yields credentials."""
        return await self._sdk().get_credentials() is not None

    def _sdk(self) -> Any:
        """The SDK session, made on first use: commands and checks that call nothing never load it."""
        if self._session is None:
            # aioboto3's engine, without boto3's resource layer and S3 transfer hooks (about 0.1 s
            # of start-up replayer never uses); imported here, not at import (about 0.2 s more).
            self._session = _new_session()
        return self._session

    def _aio_config(self, service: str) -> Any:
        """The client configuration of `service`: ours, and the HTTP session sharing TLS contexts."""
        from aiobotocore.config import AioConfig

        config = AioConfig().merge(self._config)
        if service in _SERVICE_CONFIG:
            config = config.merge(_SERVICE_CONFIG[service])
        config.http_session_cls = _http_session_cls()  # set after: AioConfig.merge drops it
        return config

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for task in list(self._closing):
            task.cancel()  # its client closes now
        await asyncio.gather(*self._closing, return_exceptions=True)
        for _, manager in reversed(clients):
            await manager.__aexit__(None, None, None)

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SqsQueue:
    """One SQS queue, typed: the calls replayer makes on it (receive, delete, visibility)."""

    def __init__(self, url: str, clients: Clients, region: str | None) -> None:
        self.url = url
        self._clients = clients
        self._region = region
        # Held around every visibility change, so a heartbeat never lands after a retry's own.
        self.visibility_lock = asyncio.Lock()

    @classmethod
    async def open(cls, clients: Clients, url: str) -> SqsQueue:
        """The queue at `url`, through a client of the region its URL names (else the default)."""
        from replayer.config import queue_region

        queue = cls(url, clients, queue_region(url))
        await queue._sqs()  # made now: a bad region or endpoint shows at once
        return queue

    async def _sqs(self) -> Any:
        # Asked of `Clients` on every call, never kept: the bounded cache may retire a client.
        return await self._clients.get("sqs", self._region)

    async def receive(
        self, *, at_most: int, wait_seconds: int, visibility_timeout: int
    ) -> list[dict[str, Any]]:
        """Up to `at_most` (≤ 10) messages, each with its ApproximateReceiveCount."""
        answer = await (await self._sqs()).receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, at_most)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages: list[dict[str, Any]] = answer.get("Messages") or []
        return messages

    async def visible(self) -> int:
        """ApproximateNumberOfMessages: messages waiting to be received (SQS's estimate)."""
        answer = await (await self._sqs()).get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    async def delete(self, receipt: str) -> None:
        await (await self._sqs()).delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    async def change_visibility(self, receipt: str, seconds: int) -> None:
        await (await self._sqs()).change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds
        )

    async def change_visibility_batch(
        self, receipts: list[str], seconds: int | list[int]
    ) -> list[tuple[int, str]]:
        """ChangeMessageVisibilityBatch for up to 10 receipts (one timeout for all, or one each);
        the (index, error code) of each failure."""
        each = seconds if isinstance(seconds, list) else [seconds] * len(receipts)
        entries = [
            {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": s}
            for i, (r, s) in enumerate(zip(receipts, each, strict=True))
        ]
        answer = await (await self._sqs()).change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
        return [(int(f.get("Id", 0)), str(f.get("Code"))) for f in answer.get("Failed") or []]

    async def delete_batch(self, receipts: list[str]) -> list[tuple[int, str]]:
        """DeleteMessageBatch for up to 10 receipts; the (index, error code) of each failure."""
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)]
        answer = await (await self._sqs()).delete_message_batch(QueueUrl=self.url, Entries=entries)
        return [(int(f.get("Id", 0)), str(f.get("Code"))) for f in answer.get("Failed") or []]

    async def send(self, body: str, attributes: dict[str, Any]) -> str:
        """SendMessage; the new message's id."""
        answer = await (await self._sqs()).send_message(
            QueueUrl=self.url, MessageBody=body, MessageAttributes=attributes
        )
        return str(answer.get("MessageId", ""))
