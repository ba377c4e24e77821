"""Read an archive back: find its complete ranges, hand their records back verified.

Only ranges with a manifest are complete; a manifest that cannot be read (or, where a
manifest key is configured, carries no valid MAC), or objects that do not match their manifest
(SHA-256, count, range, order, a range's ceiling), make the range damaged: its records are
never handed on. Folders named as 0.1.0 named them are read too; where a range has a folder
under both names, the current one is used.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass

from replayer.archive.layout import LOSS_REPORT, MANIFEST, RECORDS, REDRIVEN, range_path
from replayer.archive.mac import MacError, MacUnavailable, ManifestKey
from replayer.archive.manifest import MAX_OBJECT_BYTES, ArchivedRange, archived_range, sha256, unpack_records
from replayer.archive.store import Store, StoreError, TooLarge
from replayer.model import Failure, StreamRecord

__all__ = ["Damaged", "Unreadable", "check_ranges", "find_ranges", "read_records"]


class Damaged(ValueError):
    """An archived range whose objects contradict its manifest (or each other)."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A manifest found but not usable: `transient` when the store failed, else the manifest is bad."""

    location: str
    reason: str
    transient: bool
    failure: Failure | None = None  # the range it names, when it could be read that far


async def find_ranges(
    store: Store,
    folders: Iterable[str] = ("",),
    *,
    concurrency: int = 8,
    manifest_key: ManifestKey | None = None,
) -> tuple[list[ArchivedRange], list[Unreadable]]:
    """Every complete range below `folders` (with the re-drive markers beside it), and each bad manifest
    (with `manifest_key`: each manifest without its valid MAC too).

    StoreError when a folder cannot be listed.
    """
    manifests: set[str] = set()
    markers: dict[str, set[str]] = {}
    for under in folders:
        for key in await store.keys(under):
            folder, _, name = key.rpartition("/")
            if name == MANIFEST and folder:
                manifests.add(folder)
            elif folder.endswith(f"/{REDRIVEN}"):
                markers.setdefault(folder[: -len(REDRIVEN) - 1], set()).add(f"{REDRIVEN}/{name}")
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(folder: str) -> ArchivedRange | Unreadable:
        key = f"{folder}/{MANIFEST}"
        async with slots:
            archived = None
            try:
                body = await store.read(key)
                if body is None:
                    raise ValueError("it disappeared while listing")
                archived = archived_range(folder, body, markers.get(folder, ()))
                if manifest_key is not None:
                    await manifest_key.verify(json.loads(body))
                return archived
            except (StoreError, MacUnavailable) as exc:
                failure = archived.failure if archived else None
                return Unreadable(store.location(key), str(exc), transient=True, failure=failure)
            except (ValueError, MacError) as exc:  # TooLarge and MacError are ValueErrors too
                failure = archived.failure if archived else None
                return Unreadable(
                    store.location(key), f"bad manifest: {exc}", transient=False, failure=failure
                )

    found = await asyncio.gather(*(one(folder) for folder in sorted(manifests)))
    ranges = [r for r in found if isinstance(r, ArchivedRange)]
    current = {r.failure.range_id for r in ranges if r.folder == range_path(r.failure)}
    return (
        # a range in both 0.1.0's folder and the current one: the current one
        [r for r in ranges if r.folder == range_path(r.failure) or r.failure.range_id not in current],
        [u for u in found if isinstance(u, Unreadable)],
    )


async def read_records(store: Store, archived: ArchivedRange) -> tuple[StreamRecord, ...]:
    """The range's records, bytes as archived, once the folder checks out against its manifest.

    Damaged when it does not (its message names the object), StoreError on store trouble.
    """
    if archived.loss_report_sha256 is not None:
        key = f"{archived.folder}/{LOSS_REPORT}"
        report = await store.read(key)
        if report is None or sha256(report) != archived.loss_report_sha256:
            raise Damaged(
                f"{store.location(key)}: damaged: the loss report does not match its manifest's SHA-256"
            )
    if not archived.count:
        return ()
    key = f"{archived.folder}/{RECORDS}"
    try:
        data = await store.read(key, limit=MAX_OBJECT_BYTES)
    except TooLarge as exc:
        raise Damaged(f"{store.location(key)}: damaged: {exc}") from None
    try:
        # gzip, JSON and SHA-256 over a whole range: in a thread, never on the event loop
        return await asyncio.to_thread(_checked_records, data, archived)
    except ValueError as exc:
        raise Damaged(f"{store.location(key)}: damaged: {exc}") from None


def _checked_records(data: bytes | None, archived: ArchivedRange) -> tuple[StreamRecord, ...]:
    """The records object's records once it matches its manifest; ValueError saying where it does not."""
    if data is None:
        raise ValueError("the records object is missing")
    if archived.records_sha256 not in (None, sha256(data)):  # checked before a byte is inflated
        raise ValueError("the records object does not match its manifest's SHA-256")
    records = unpack_records(data, archived.failure)
    if len(records) != archived.count:
        raise ValueError(
            f"the records object holds {len(records)} records where the manifest says {archived.count}"
        )
    if archived.records_sha256 is not None and (
        records[0].sequence_number != archived.first_sequence
        or records[-1].sequence_number != archived.last_sequence
    ):
        raise ValueError("the records object's first or last sequence number is not its manifest's")
    return records


async def check_ranges(
    store: Store, ranges: Iterable[ArchivedRange], *, concurrency: int = 8
) -> dict[str, str]:
    """Per folder of `ranges`, why it is damaged (its objects contradict its manifest); StoreError
    when the store cannot answer. A range not named is sound."""
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(archived: ArchivedRange) -> tuple[str, str | None]:
        async with slots:
            try:
                await read_records(store, archived)
            except Damaged as exc:
                return archived.folder, str(exc)
        return archived.folder, None

    checked = await asyncio.gather(*(one(r) for r in ranges))
    return {folder: why for folder, why in checked if why is not None}
