"""Where durable objects live: an S3 bucket and prefix, or a local directory. Create-only.

The archive sinks, `redrive` and the S3 quarantine all need the same few things: create
an object only if it is not there yet, read one back, list a folder. This module is the
one place that does them, for both kinds of location.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from replayer.aws import Clients, error_code

_T = TypeVar("_T")

__all__ = ["FileStore", "S3Store", "Store", "StoreError", "parse_location", "store_from_uri", "write_once"]


class StoreError(Exception):
    """An object could not be listed, read or written just now. `code` is AWS's, when known."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Store(Protocol):
    """Objects addressed by keys relative to the store's root (``folder/name``)."""

    @property
    def uri(self) -> str: ...

    def location(self, key: str) -> str:
        """The full address of `key`, for people and reports."""
        ...

    async def keys(self, under: str = "") -> list[str]:
        """Every key below the folder `under` ("" : the whole store)."""
        ...

    async def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...

    async def create(self, key: str, body: bytes, *, content_type: str = "application/json",
                     encoding: str | None = None) -> bool:  # fmt: skip
        """Create the object unless it exists; True when this call created it."""
        ...


def parse_location(uri: str) -> tuple[str, str, str] | None:
    """``s3://BUCKET[/PREFIX]`` -> ("s3", bucket, prefix); ``file:DIR`` -> ("file", dir, ""); else None."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        return ("s3", bucket, prefix.strip("/")) if bucket else None
    if uri.startswith("file:"):
        root = uri[len("file:") :]
        root = root[2:] if root.startswith("//") else root
        return ("file", root, "") if root else None
    return None


def store_from_uri(uri: str, clients: Clients) -> S3Store | FileStore | None:
    """The store a location URI names, or None when it names none."""
    parsed = parse_location(uri)
    if parsed is None:
        return None
    kind, where, prefix = parsed
    return S3Store(clients, where, prefix) if kind == "s3" else FileStore(where)


class S3Store:
    """``s3://bucket/prefix``. Creating uses ``If-None-Match: *``: a second writer never overwrites."""

    def __init__(self, clients: Clients, bucket: str, prefix: str = "") -> None:
        self._clients = clients
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, key: str) -> str:
        """The object key in the bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def _error(self, where: str, exc: Exception) -> StoreError:
        code = error_code(exc) if isinstance(exc, ClientError) else ""
        return StoreError(f"{where}: {code or exc}", code)

    async def keys(self, under: str = "") -> list[str]:
        s3 = await self._clients.get("s3")
        root = f"{self.prefix}/" if self.prefix else ""
        listed: list[str] = []
        try:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(
                Bucket=self.bucket, Prefix=root + (f"{under}/" if under else "")
            ):
                listed += [obj["Key"][len(root) :] for obj in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._error(f"{self.uri}: listing failed", exc) from exc
        return listed

    async def read(self, key: str) -> bytes | None:
        s3 = await self._clients.get("s3")

        async def get() -> bytes:
            answer = await s3.get_object(Bucket=self.bucket, Key=self.key(key))
            body: bytes = await answer["Body"].read()
            return body

        return await self._call(key, get(), unless=("NoSuchKey", "404"))

    async def create(self, key: str, body: bytes, *, content_type: str = "application/json",
                     encoding: str | None = None) -> bool:  # fmt: skip
        s3 = await self._clients.get("s3")
        extra = {"ContentEncoding": encoding} if encoding else {}
        put = s3.put_object(
            Bucket=self.bucket,
            Key=self.key(key),
            Body=body,
            ContentType=content_type,
            IfNoneMatch="*",
            **extra,
        )
        return await self._call(key, put, unless=("PreconditionFailed", "412")) is not None

    async def _call(self, key: str, call: Awaitable[_T], *, unless: tuple[str, ...]) -> _T | None:
        """`call`'s answer; None when S3 answers with one of the `unless` codes (absent, already
        there); StoreError on any other trouble, naming the object."""
        try:
            return await call
        except ClientError as exc:
            if error_code(exc) in unless:
                return None
            raise self._error(self.location(key), exc) from exc
        except BotoCoreError as exc:
            raise self._error(self.location(key), exc) from exc


def write_once(path: Path, body: bytes) -> bool:
    """Create `path` with `body` unless it exists; True when this call created it.

    The bytes go to a temporary name first and are linked into place, so a reader never
    sees a partly written file and a second writer never replaces the first. The file and
    then its directory are fsynced before True is returned.
    """
    _make_folders(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _sync_directory(path.parent)  # the new entry survives a power loss once we say "created"
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _make_folders(folder: Path) -> None:
    """mkdir -p, syncing the parent of each folder created so the folders too survive a power loss."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            created.mkdir()
        _sync_directory(created.parent)


def _sync_directory(folder: Path) -> None:
    """fsync a directory, making the names created in it durable (not only their contents)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """``file:DIR``: the same keys as paths below a directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return f"file:{self.root}"

    def path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def location(self, key: str) -> str:
        return str(self.path(key))

    def _keys(self, under: str) -> list[str]:
        if not self.root.is_dir():
            raise StoreError(f"{self.uri}: no such directory", "NoSuchDirectory")
        listed: list[str] = []
        for folder, _dirs, names in os.walk(self.path(under) if under else self.root):
            listed += [
                Path(folder, name).relative_to(self.root).as_posix()
                for name in names
                if not name.startswith(".tmp-")  # write_once's partial files
            ]
        return listed

    async def keys(self, under: str = "") -> list[str]:
        try:
            return await asyncio.to_thread(self._keys, under)
        except OSError as exc:
            raise StoreError(f"{self.uri}: listing failed: {exc}") from exc

    async def read(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self.path(key).read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.location(key)}: {exc}") from exc

    async def create(self, key: str, body: bytes, *, content_type: str = "application/json",
                     encoding: str | None = None) -> bool:  # fmt: skip
        try:
            return await asyncio.to_thread(write_once, self.path(key), body)
        except OSError as exc:
            raise StoreError(f"{self.location(key)}: {exc}") from exc
