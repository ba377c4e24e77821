"""`invokeIdentityArn` for Kinesis records, filled the way Lambda fills it.

Lambda puts the execution role of the function it delivers to in every Kinesis record
(Powertools' `KinesisDataStreamRecord` requires it). A `lambda:` sink uses its target's
role; an archive the role of the function that failed (the invocation record's
function ARN). Roles come from GetFunctionConfiguration, once per function and process.
`--invoke-identity-arn` / REPLAYER_INVOKE_IDENTITY_ARN overrides: the reader then fills
the field, and a `lambda:` sink puts it in records read back from an archive too. When the lookup is refused the field is left
out, with one WARNING naming the permission and the override.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.aws import Clients, error_code
from replayer.model import Failure, StreamKind, StreamRecord
from replayer.readers import pages_of
from replayer.sinks._base import SinkError
from replayer.wire import dumps, loads

__all__ = ["IDENTITY_KEY", "Roles", "as_delivered", "failed_function", "with_identity"]

log = logs.get_logger("replayer")

IDENTITY_KEY = b'"invokeIdentityArn":'
_FUNCTION_ARN = re.compile(
    r"arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):function:[A-Za-z0-9_-]{1,64}"
)
_MAX_KNOWN = 1024  # functions whose role is remembered; the least recently used is asked again
# Not permitted, or no such function: the same answer next time, so it is remembered.
_LASTING = {
    "AccessDenied",
    "AccessDeniedException",
    "ResourceNotFoundException",
    "UnrecognizedClientException",
}


def failed_function(failure: Failure) -> tuple[str, str, str] | None:
    """(function ARN, region, account) of the function that gave up on the batch, when the record
    names one in its stream's account and region (the stream picks where replayer looks, never the
    message: a function elsewhere is not looked up, and the records go without the field)."""
    arn = failure.source_arn or ""
    m = _FUNCTION_ARN.match(arn)
    if m is None:
        return None
    stream = failure.arn
    if (m["account"], m["region"]) != (stream.account, stream.region):
        log.info(
            "invoke_identity_not_looked_up",
            function=m.group(0),
            reason="not in the stream's account and region",
        )
        return None
    return m.group(0), m["region"], m["account"]


class Roles:
    """Execution roles of functions, looked up once each (None: not permitted, or none)."""

    def __init__(self, clients: Clients) -> None:
        self._clients = clients
        self._known: OrderedDict[tuple[str, str | None], str | None] = OrderedDict()
        self._lock = asyncio.Lock()

    async def role_of(self, function: str, region: str | None, account: str | None = None) -> str | None:
        key = (function, region)
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        async with self._lock:
            if key not in self._known:
                self._known[key] = await self._look_up(function, region, account)
                while len(self._known) > _MAX_KNOWN:
                    self._known.popitem(last=False)
            return self._known[key]

    async def _look_up(self, function: str, region: str | None, account: str | None) -> str | None:
        try:
            client = await self._clients.get("lambda", region, account)
            answer = await client.get_function_configuration(FunctionName=function)
        except ClientError as exc:
            code = error_code(exc)
            if code not in _LASTING:
                raise SinkError(f"GetFunctionConfiguration {function}: {code or exc}") from exc
            log.warning(
                "invoke_identity_unknown",
                function=function,
                error=code,
                hint="Kinesis records go without invokeIdentityArn: allow lambda:GetFunctionConfiguration "
                "on the function, or set --invoke-identity-arn / REPLAYER_INVOKE_IDENTITY_ARN",
            )
            return None
        except BotoCoreError as exc:
            raise SinkError(f"GetFunctionConfiguration {function}: {exc}") from exc
        role = answer.get("Role")
        return role if isinstance(role, str) and role else None


async def as_delivered(
    roles: Roles | None, failure: Failure, records: Sequence[StreamRecord]
) -> Iterable[Sequence[StreamRecord]]:
    """The records a page at a time as Lambda delivered them: Kinesis ones with the role of the
    function that failed as invokeIdentityArn (what the archive keeps and `-` prints alike)."""
    if roles is None or failure.kind is not StreamKind.KINESIS or not records:
        return pages_of(records)  # (only Kinesis records carry the field; a Kafka cluster may have no ARN)
    function = failed_function(failure)
    if function is None:
        return pages_of(records)
    role = await roles.role_of(*function)
    return (with_identity(failure, page, role) for page in pages_of(records))


def with_identity(
    failure: Failure, records: Sequence[StreamRecord], role: str | None, *, replace: bool = False
) -> Sequence[StreamRecord]:
    """Kinesis records with `role` as invokeIdentityArn (first key) where they have none; others as
    they are. With `replace`, records that carry another role get `role` instead (a `lambda:` sink
    re-driving archived records: Lambda names the role of the function it invokes)."""
    if role is None or failure.kind is not StreamKind.KINESIS:
        return records
    head = b"{" + IDENTITY_KEY + dumps(role) + b","
    out = []
    for r in records:
        if IDENTITY_KEY not in r.json:
            out.append(StreamRecord(r.sequence_number, head + r.json[1:]))
        elif replace:
            event = loads(r.json)
            if event.get("invokeIdentityArn") == role:
                out.append(r)
                continue
            event.pop("invokeIdentityArn", None)
            out.append(StreamRecord(r.sequence_number, head + dumps(event)[1:]))
        else:
            out.append(r)
    return out
