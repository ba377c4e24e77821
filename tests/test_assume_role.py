"""Streams in other accounts (#16.4): `--assume-role`, against moto over HTTP.

moto keeps one world per account and tells the account from the access key a request is
signed with: a key from STS AssumeRole belongs to the role's account. So a stream created
with account B's credentials is invisible to the default ones, and reading it proves the
reader signed with the role for B. The fault proxy also records which key signed each call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest

from replayer.allow import AllowList
from replayer.aws import AssumeRoles, Clients
from replayer.config import load
from replayer.core import Replayer
from replayer.errors import ConfigError
from replayer.mappings import MappingFinder
from replayer.model import Failure, OutcomeKind
from replayer.parse import parse_message
from replayer.readers import NO_SUCH_STREAM, KinesisReader, Readers
from replayer.sinks import FileSink, SinkOptions, sink_from_uri
from tests.support.aws import DynamoTable, KinesisStream, client
from tests.support.faultproxy import FaultProxy, Request, Rule

OWN = "123456789012"  # the account moto gives the default ("testing") credentials
DEFAULT_KEY = "testing"
_KEY = re.compile(r"Credential=([^/]+)/")


class Signed:
    """Every call through the proxy: (operation, access key id, the RoleArn of an AssumeRole)."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        proxy.add(Rule(match=self._see))

    def _see(self, request: Request) -> bool:
        key = m[1] if (m := _KEY.search(request.headers.get("authorization", ""))) else ""
        form = parse_qs(request.body.decode(errors="replace")) if request.method == "POST" else {}
        action = (form.get("Action") or [request.operation])[0]
        self.calls.append((action, key, (form.get("RoleArn") or [None])[0]))
        return False  # only watching: every request goes on to moto unchanged

    def keys(self, operation: str) -> set[str]:
        return {key for op, key, _ in self.calls if op == operation}

    def assumed(self) -> list[str | None]:
        return [role for op, _, role in self.calls if op == "AssumeRole"]


@pytest.fixture
def signed(proxy: FaultProxy) -> Signed:
    return Signed(proxy)


@pytest.fixture
def in_account(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`in_account(ACCOUNT)`: a Kinesis stream created (and written) in that account of moto."""

    def make(account: str) -> KinesisStream:
        sts = client("sts", moto_endpoint)
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/owner", RoleSessionName="test")[
            "Credentials"
        ]
        with monkeypatch.context() as env:
            env.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
            env.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
            env.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
            env.setattr(boto3, "DEFAULT_SESSION", None)  # a session that reads these credentials
            stream = KinesisStream(moto_endpoint)
        assert f":{account}:" in stream.stream_arn
        stream.put(4)
        return stream

    yield make


def failure_of(stream: KinesisStream, first: int, last: int) -> Failure:
    (failure,) = parse_message(stream.invocation_record(first, last))
    return failure


async def read_sequences(failure: Failure, roles: AssumeRoles) -> list[str]:
    async with Clients(assume_roles=roles) as clients:
        result = await KinesisReader(clients).read(failure)
    assert result.refused is None and not result.gaps, (result.refused, result.gaps)
    return [r.sequence_number for r in result.records]


def put_sequences(stream: KinesisStream, first: int, last: int) -> list[str]:
    return [p["SequenceNumber"] for p in stream.puts[first : last + 1]]


async def test_a_stream_in_another_account_is_read_with_that_accounts_role(
    signed: Signed, in_account: Any
) -> None:
    stream = in_account("222222222222")
    role = "arn:aws:iam::222222222222:role/replayer-reader"
    failure = failure_of(stream, 1, 2)

    assert await read_sequences(failure, AssumeRoles.of([f"222222222222={role}"])) == put_sequences(
        stream, 1, 2
    )
    assert signed.assumed() == [role]  # once, refreshable credentials shared by the reader's calls
    (key,) = signed.keys("GetRecords")
    assert key != DEFAULT_KEY
    # Without the role, the default credentials see no such stream: the role is what reached it.
    async with Clients() as clients:
        result = await KinesisReader(clients).read(failure)
    assert result.refused == f"{NO_SUCH_STREAM}: {stream.stream_arn}"


async def test_a_role_template_names_the_role_of_the_streams_account(signed: Signed, in_account: Any) -> None:
    stream = in_account("333333333333")
    roles = AssumeRoles.of(["arn:aws:iam::{account}:role/replayer-reader"])

    assert await read_sequences(failure_of(stream, 0, 3), roles) == put_sequences(stream, 0, 3)
    assert signed.assumed() == ["arn:aws:iam::333333333333:role/replayer-reader"]
    assert DEFAULT_KEY not in signed.keys("GetRecords")


async def test_our_own_account_and_accounts_without_a_role_use_the_default_credentials(
    signed: Signed, kinesis_stream: KinesisStream
) -> None:
    kinesis_stream.put(3)
    failure = failure_of(kinesis_stream, 0, 2)
    assert failure.arn.account == OWN
    other_role = AssumeRoles.of(["444444444444=arn:aws:iam::444444444444:role/replayer-reader"])
    template = AssumeRoles.of(["arn:aws:iam::{account}:role/replayer-reader"])

    own_role = AssumeRoles.of([f"{OWN}=arn:aws:iam::{OWN}:role/replayer-reader"])  # never needed

    for roles in (other_role, template, own_role):
        assert await read_sequences(failure, roles) == put_sequences(kinesis_stream, 0, 2)
    assert signed.assumed() == []
    assert signed.keys("GetRecords") == {DEFAULT_KEY}


async def test_a_stream_not_allowed_is_never_read_and_no_role_is_assumed(
    signed: Signed, in_account: Any, tmp_path: Path
) -> None:
    stream = in_account("555555555555")
    signed.calls.clear()
    roles = AssumeRoles.of(["arn:aws:iam::{account}:role/replayer-reader"])
    async with Clients(assume_roles=roles) as clients:
        replayer = Replayer(
            clients, [FileSink(tmp_path)], readers=Readers(clients), allow=AllowList.of(["*:666666666666:*"])
        )
        outcome = await replayer.replay(failure_of(stream, 0, 1))
    assert outcome.kind is OutcomeKind.REJECTED and "not allowed" in outcome.reason
    assert signed.calls == []  # no AssumeRole, no GetCallerIdentity, no stream call
    assert not any(tmp_path.iterdir())


def test_assume_role_is_read_from_flags_and_the_environment() -> None:
    role = "111122223333=arn:aws:iam::111122223333:role/r"
    template = "arn:aws:iam::{account}:role/replayer-reader"
    env = {"REPLAYER_TO": "-", "REPLAYER_ASSUME_ROLES": f"{role},{template}"}
    assert load("replay", {}, env).assume_roles == (role, template)
    assert load("replay", {"assume_roles": [role]}, env).assume_roles == (role,)
    roles = AssumeRoles.of([role, template])
    assert roles.role_for("111122223333", OWN) == "arn:aws:iam::111122223333:role/r"
    assert roles.role_for("999999999999", OWN) == "arn:aws:iam::999999999999:role/replayer-reader"
    assert roles.role_for(OWN, OWN) is None
    with pytest.raises(ConfigError, match="--assume-role: 'nope' is neither ACCOUNT=ROLE_ARN"):
        load("replay", {"assume_roles": ["nope"]}, {"REPLAYER_TO": "-"})
    with pytest.raises(ConfigError, match="at most one role ARN template"):
        load(
            "replay", {"assume_roles": [template, "arn:aws:iam::{account}:role/other"]}, {"REPLAYER_TO": "-"}
        )


async def test_a_function_in_another_account_is_invoked_with_that_accounts_role(
    signed: Signed, proxy: FaultProxy, table: DynamoTable
) -> None:
    """moto runs no functions: the proxy answers the Invoke (after `signed` saw who signed it)."""
    invoked = proxy.add(
        Rule(lambda r: r.method == "POST" and r.path.endswith("/invocations"), reply=(200, {}, b"{}"))
    )
    table.put(2)
    (failure,) = parse_message(table.invocation_record(0, 1))
    function = "arn:aws:lambda:us-east-1:777777777777:function:repair"
    roles = AssumeRoles.of(["arn:aws:iam::{account}:role/replayer-reader"])
    async with Clients(assume_roles=roles) as clients:
        sink = sink_from_uri(f"lambda:{function}", clients, SinkOptions(invoke_retries=0))
        outcome = await Replayer(clients, [sink], readers=Readers(clients), allow=AllowList.of(["*"])).replay(
            failure
        )
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.reason
    assert invoked.hits == 1
    assert signed.assumed() == ["arn:aws:iam::777777777777:role/replayer-reader"]
    invokes = {key for op, key, _ in signed.calls if op.endswith("/invocations")}
    assert len(invokes) == 1 and DEFAULT_KEY not in invokes
    assert signed.keys("GetRecords") == {DEFAULT_KEY}  # the stream is ours: default credentials


async def test_a_function_arn_elsewhere_is_never_looked_up_nor_a_role_assumed_for_it(
    signed: Signed, table: DynamoTable
) -> None:
    """#21.7: the stream picks the account and region. A functionArn in another account (or another
    region) is not looked up: no AssumeRole, no client for it; the mapping's answer says why."""
    table.put(2)
    record = table.invocation_record(0, 1)
    record["requestContext"]["functionArn"] = "arn:aws:lambda:zz-evil-9:999999999999:function:consumer"
    (theirs,) = parse_message(record)
    (ours,) = parse_message(table.invocation_record(0, 1))
    roles = AssumeRoles.of(["arn:aws:iam::{account}:role/replayer-reader"])
    async with Clients(assume_roles=roles) as clients:
        finder = MappingFinder(clients)
        elsewhere = await finder.find(theirs)
        assert elsewhere is not None and not elsewhere.found
        assert "not in the stream's account and region" in elsewhere.note
        found = await finder.find(ours)
        assert found is not None and not found.found  # moto holds no mapping of this function
    assert signed.assumed() == []
    lookups = [key for op, key, _ in signed.calls if "event-source-mappings" in op]
    assert lookups == [DEFAULT_KEY]  # ours only, in the stream's account: the default credentials


async def test_300_hostile_function_regions_make_no_client_and_keep_memory_bounded(
    signed: Signed, proxy: FaultProxy, table: DynamoTable, tmp_path: Path
) -> None:
    """#21.7: 300 messages, each naming its function in another region and account, through the
    whole replay: no AssumeRole, no client beyond the stream's own, caches bounded."""
    import tracemalloc

    evil = proxy.add(Rule(lambda r: "zz-evil" in r.headers.get("authorization", "")))  # signed for one
    table.put(1)
    roles = AssumeRoles.of(["arn:aws:iam::{account}:role/replayer-reader"])
    failures = []
    for i in range(300):
        record = table.invocation_record(0, 0)
        record["requestContext"]["functionArn"] = f"arn:aws:lambda:zz-evil-{i}:999999999999:function:f{i}"
        (failure,) = parse_message(record)
        failures.append(failure)
    async with Clients(assume_roles=roles) as clients:
        replayer = Replayer(
            clients, [FileSink(tmp_path)], readers=Readers(clients), allow=AllowList.of(["*"])
        )
        first = await replayer.replay(failures[0])
        assert first.kind is OutcomeKind.REPLAYED, first.reason
        opened = clients.count
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tickets = await replayer.scheduler(concurrency=32).run(failures[1:])
        outcomes = [t.result() for t in tickets]
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert clients.count == opened
        assert replayer.mappings is not None and replayer.mappings.cached == 0
    assert {o.kind if o else None for o in outcomes} == {OutcomeKind.REPLAYED}
    last = outcomes[-1]
    mapping = last.failure.mapping if last and last.failure else None
    assert mapping is not None and "not looked up" in mapping.note
    assert signed.assumed() == []
    assert evil.hits == 0
    assert grown < 2_000_000, grown  # no client, session or cache entry per region (each is ~100 kB)
