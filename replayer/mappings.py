"""Which event source mapping (or pipe) gave up on a batch: its UUID, filter, batch size and state.

Knowing the mapping lets a re-drive hand the repair function what the mapping would have
delivered (its `FilterCriteria`), and lets the archive say which filter applied. It is
looked up once per process for each (function or pipe, stream) and cached:

- Lambda: ``GetEventSourceMapping(UUID)`` when the failure carries the UUID (S3 on-failure
  destination keys, ``aws/lambda/<UUID>/...``), else ``ListEventSourceMappings`` by the
  invocation record's ``functionArn`` and the stream ARN.
- EventBridge Pipes: ``DescribePipe`` by the pipe ARN of the dead-letter record.

When the lookup is not permitted, finds nothing, or finds several mappings that disagree,
the answer says so (``found: false`` and a note) and records are re-driven unfiltered;
that answer is cached too, and logged once. Throttling and network trouble are not
cached: they raise, and the range is retried like any transient failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from replayer import logs
from replayer.aws import Clients, error_code
from replayer.model import (
    KAFKA_SELF_MANAGED,
    Failure,
    Origin,
    SourceMapping,
    kafka_self_managed_source,
    kafka_servers,
)

__all__ = [
    "MappingFinder",
    "esm_uuid_from_key",
    "from_esm",
    "from_pipe",
    "reads_source",
    "summary",
    "with_mappings",
]

log = logs.get_logger(__name__)

LAMBDA_ESM = "lambda-esm"
PIPE = "pipe"

_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException"}
_NOT_FOUND = {"ResourceNotFoundException", "NotFoundException", "ValidationException"}
_FUNCTION_ARN = re.compile(
    r"arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:(?P<name>[A-Za-z0-9_-]{1,64})(?::(?P<qualifier>[A-Za-z0-9$_-]+))?"
)
_PIPE_ARN = re.compile(
    r"arn:aws[a-z-]*:pipes:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):pipe/(?P<name>[A-Za-z0-9._-]{1,64})"
)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_S3_DESTINATION_KEY = re.compile(rf"(?:^|/)aws/lambda/(?P<uuid>{_UUID})/")


def esm_uuid_from_key(key: str) -> str | None:
    """The mapping UUID in an S3 on-failure destination object's key (``aws/lambda/<UUID>/<shard>/...``)."""
    m = _S3_DESTINATION_KEY.search(key)
    return m["uuid"].lower() if m else None


def _filters(criteria: Any) -> tuple[str, ...]:
    filters = criteria.get("Filters") if isinstance(criteria, Mapping) else None
    if not isinstance(filters, list):
        return ()
    return tuple(
        f["Pattern"] for f in filters if isinstance(f, Mapping) and isinstance(f.get("Pattern"), str)
    )


def from_esm(esm: Mapping[str, Any], note: str = "") -> SourceMapping:
    """A `SourceMapping` from a Lambda `EventSourceMappingConfiguration`."""
    batch = esm.get("BatchSize")
    return SourceMapping(
        found=True,
        kind=LAMBDA_ESM,
        arn=esm.get("FunctionArn"),
        uuid=esm.get("UUID"),
        filters=_filters(esm.get("FilterCriteria")),
        batch_size=batch if isinstance(batch, int) else None,
        state=esm.get("State"),
        note=note,
    )


def from_pipe(pipe: Mapping[str, Any]) -> SourceMapping:
    """A `SourceMapping` from a `DescribePipe` answer."""
    source = pipe.get("SourceParameters") or {}
    stream = source.get("DynamoDBStreamParameters") or source.get("KinesisStreamParameters") or {}
    batch = stream.get("BatchSize")
    return SourceMapping(
        found=True,
        kind=PIPE,
        arn=pipe.get("Arn"),
        filters=_filters(source.get("FilterCriteria")),
        batch_size=batch if isinstance(batch, int) else None,
        state=pipe.get("CurrentState"),
    )


DEFAULT_MAX_CACHED = 1024  # lookups remembered; the least recently used is forgotten (asked again)


class MappingFinder:
    """Finds (and caches, per process) the mapping of each failure; see the module's docstring.

    The stream picks the account and region of every lookup, never the message: a function or
    pipe ARN in another account or region is not looked up (the answer says so). At most
    `max_cached` answers are kept.
    """

    def __init__(self, clients: Clients, *, max_cached: int = DEFAULT_MAX_CACHED) -> None:
        self._clients = clients
        self.max_cached = max(1, max_cached)
        self._found: OrderedDict[tuple[str | None, ...], asyncio.Task[SourceMapping | None]] = OrderedDict()

    @property
    def cached(self) -> int:
        """How many answers are kept now."""
        return len(self._found)

    async def find(self, failure: Failure) -> SourceMapping | None:
        """The failure's mapping; None for ranges given by hand. Raises only for transient trouble."""
        if failure.origin is Origin.PIPES:
            key: tuple[str | None, ...] = (PIPE, failure.source_arn)
        elif failure.mapping_uuid:
            key = (LAMBDA_ESM, failure.mapping_uuid)
        elif failure.origin is Origin.LAMBDA_ESM and failure.source_arn:
            key = (LAMBDA_ESM, failure.source_arn, failure.stream_arn)
        else:
            return None
        if (elsewhere := _elsewhere(failure)) is not None:
            log.warning("mapping_not_looked_up", source_arn=failure.source_arn, note=elsewhere.note)
            return elsewhere  # nothing asked, nothing kept
        task = self._found.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = self._found[key] = asyncio.ensure_future(self._lookup(failure))
            while len(self._found) > self.max_cached:
                self._found.popitem(last=False)  # an awaited lookup still finishes for its waiters
        else:
            self._found.move_to_end(key)
        return await asyncio.shield(task)

    async def _lookup(self, failure: Failure) -> SourceMapping | None:
        if failure.origin is Origin.PIPES:
            found = await self._pipe(failure)
        else:
            found = await self._esm(failure)
        if not found.found:  # a warning only where a filter would apply: the lambda: sink says so
            log.info("mapping_unknown", kind=found.kind, source_arn=failure.source_arn, note=found.note)
        elif found.filters:
            log.info(
                "mapping_filter", kind=found.kind, uuid=found.uuid, arn=found.arn, filters=len(found.filters)
            )
        return found

    async def _esm(self, failure: Failure) -> SourceMapping:
        function = _FUNCTION_ARN.fullmatch(failure.source_arn or "")
        if failure.self_managed:  # no ARN to place it by: our own account and region, never the message's
            client = await self._clients.get("lambda")
        else:
            # The stream's account and region (its role, --assume-role): a mapping is where its stream is.
            client = await self._clients.get("lambda", failure.region, failure.arn.account)
        try:
            if failure.mapping_uuid:
                return from_esm(await client.get_event_source_mapping(UUID=failure.mapping_uuid))
            if function is None:
                return _unknown(LAMBDA_ESM, f"{failure.source_arn!r} is not a function ARN")
            names = [function[0]]
            if function["qualifier"]:  # a mapping on the unqualified function serves $LATEST and versions
                names.append(function[0].rsplit(":", 1)[0])
            for name in names:
                found = await _list_esms(client, name, failure.stream_arn)
                if found:
                    return _one_of(found)
            return _unknown(LAMBDA_ESM, f"no event source mapping of {failure.source_arn} reads this stream")
        except ClientError as exc:
            return _refused(LAMBDA_ESM, exc, "lambda:ListEventSourceMappings / lambda:GetEventSourceMapping")

    async def _pipe(self, failure: Failure) -> SourceMapping:
        pipe = _PIPE_ARN.fullmatch(failure.source_arn or "")
        if pipe is None:
            return _unknown(PIPE, f"{failure.source_arn!r} is not a pipe ARN")
        client = await self._clients.get("pipes", failure.region, failure.arn.account)
        try:
            return from_pipe(await client.describe_pipe(Name=pipe["name"]))
        except ClientError as exc:
            return _refused(PIPE, exc, "pipes:DescribePipe")


def _elsewhere(failure: Failure) -> SourceMapping | None:
    """The answer for a failure whose function or pipe ARN names another account or region than its
    stream's (a mapping and a pipe are where their stream is; the message never picks where replayer
    looks, nor with which role); None when it names the stream's own, or nothing parseable."""
    if failure.self_managed:  # looked up in our own account and region only (see _esm)
        return None
    pattern, kind = (_PIPE_ARN, PIPE) if failure.origin is Origin.PIPES else (_FUNCTION_ARN, LAMBDA_ESM)
    named = pattern.fullmatch(failure.source_arn or "")
    stream = failure.arn
    if named is None or (named["account"], named["region"]) == (stream.account, stream.region):
        return None
    return _unknown(
        kind,
        f"{failure.source_arn} is not in the stream's account and region ({stream.account}, "
        f"{stream.region}): not looked up",
    )


def reads_source(mapping: Mapping[str, Any], source: str) -> bool:
    """True when an event source mapping reads `source`: its EventSourceArn, or for self-managed
    Kafka (``kafka://servers``, which has no ARN) its bootstrap servers."""
    if not source.startswith(KAFKA_SELF_MANAGED):
        return bool(mapping.get("EventSourceArn") == source)
    endpoints = (mapping.get("SelfManagedEventSource") or {}).get("Endpoints") or {}
    listed = [s for s in endpoints.get("KAFKA_BOOTSTRAP_SERVERS") or [] if isinstance(s, str)]
    servers = kafka_servers(",".join(listed)) if listed else None
    return servers is not None and kafka_self_managed_source(servers) == source


async def _list_esms(client: Any, function: str, stream_arn: str) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    marker: str | None = None
    # A self-managed cluster has no ARN to ask for: the function's mappings are matched by servers.
    by_source = {} if stream_arn.startswith(KAFKA_SELF_MANAGED) else {"EventSourceArn": stream_arn}
    while True:
        page = await client.list_event_source_mappings(
            FunctionName=function, **by_source, **({"Marker": marker} if marker else {})
        )
        found += [m for m in page.get("EventSourceMappings", []) if reads_source(m, stream_arn)]
        marker = page.get("NextMarker")
        if not marker:
            return found


def _one_of(found: list[Mapping[str, Any]]) -> SourceMapping:
    """One mapping; several that share their filter count as that filter, others as unknown."""
    if len(found) == 1:
        return from_esm(found[0])
    filters = {_filters(m.get("FilterCriteria")) for m in found}
    uuids = ", ".join(str(m.get("UUID")) for m in found)
    if len(filters) == 1:
        return from_esm(found[0], note=f"{len(found)} mappings with the same filter: {uuids}")
    return _unknown(
        LAMBDA_ESM, f"{len(found)} mappings of this function read this stream with different filters: {uuids}"
    )


def _unknown(kind: str, note: str) -> SourceMapping:
    return SourceMapping(found=False, kind=kind, note=note + "; records are re-driven unfiltered")


def _refused(kind: str, exc: ClientError, permission: str) -> SourceMapping:
    code = error_code(exc)
    if code in _DENIED:
        return _unknown(kind, f"not permitted to read the mapping ({permission}: {code})")
    if code in _NOT_FOUND:
        return _unknown(kind, f"the mapping was not found ({code})")
    raise exc


def summary(mapping: SourceMapping | None) -> str:
    """One line for people: which mapping, its state, batch size and filter (or why unknown)."""
    if mapping is None:
        return "no mapping (range given by hand)"
    if not mapping.found:
        return f"mapping unknown: {mapping.note}"
    name = f"mapping {mapping.uuid}" if mapping.uuid else f"pipe {mapping.arn}"
    filters = " OR ".join(mapping.filters) if mapping.filters else "none"
    return f"{name} ({mapping.state or 'state unknown'}, batch size {mapping.batch_size}); filter: {filters}"


async def with_mappings(finder: MappingFinder, failures: Sequence[Failure]) -> list[Failure]:
    """The failures with their mappings attached; a lookup that fails transiently is noted, not raised."""
    out = []
    for failure in failures:
        try:
            found = await finder.find(failure)
        except Exception as exc:  # a plan still shows the range
            found = SourceMapping(found=False, kind=LAMBDA_ESM, note=f"lookup failed: {exc}")
        out.append(dataclasses.replace(failure, mapping=found))
    return out
