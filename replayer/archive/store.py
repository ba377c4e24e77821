"""Where durable objects live: an S3 bucket and prefix, or a local directory. Create-only.

The archive sinks, `redrive` and the S3 quarantine all need the same few things: create
an object only if it is not there yet, read one back, list a folder. This module is the
one place that does them, for both kinds of location.

Reading is bounded: an object larger than the reader's `limit` is refused (`TooLarge`)
without being held whole, and an S3 body must arrive within the clients' call deadline
(headers and body together). A `file:` store never follows a symbolic link below its root,
for writing, reading or listing: each folder is opened with ``O_NOFOLLOW`` relative to the
one above it, so a link planted anywhere below the root is refused, never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from replayer.aws import Clients, error_code

_T = TypeVar("_T")

__all__ = [
    "DOCUMENT_LIMIT",
    "FileStore",
    "S3Store",
    "Store",
    "StoreError",
    "TooLarge",
    "parse_location",
    "store_from_uri",
    "write_once",
]

DOCUMENT_LIMIT = 16 * 1024 * 1024  # bytes of a manifest, loss report or marker read back
_CHUNK = 256 * 1024


class StoreError(Exception):
    """An object could not be listed, read or written just now. `code` is AWS's, when known."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class TooLarge(ValueError):
    """An object larger than its reader accepts: refused, never read whole (not transient)."""


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

    async def read(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes | None:
        """The object's bytes, or None when there is no such object; TooLarge past `limit` bytes."""
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

    async def read(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes | None:
        s3 = await self._clients.get("s3")
        deadline = self._clients.call_deadline

        async def get() -> bytes:
            # The client bounds the call to its headers; the body must come within the same deadline.
            try:
                async with asyncio.timeout(deadline):
                    answer = await s3.get_object(Bucket=self.bucket, Key=self.key(key))
                    body = answer["Body"]
                    try:
                        size = answer.get("ContentLength")
                        if isinstance(size, int) and size > limit:
                            raise TooLarge(
                                f"{self.location(key)}: {size} bytes, more than the {limit} accepted"
                            )
                        parts, got = [], 0
                        while chunk := await body.read(_CHUNK):
                            got += len(chunk)
                            if got > limit:
                                raise TooLarge(f"{self.location(key)}: more than the {limit} bytes accepted")
                            parts.append(chunk)
                        return b"".join(parts)
                    finally:
                        body.close()
            except TimeoutError:
                raise StoreError(
                    f"{self.location(key)}: the object did not arrive within the {deadline:g} s call deadline",
                    "CallDeadline",
                ) from None

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


def write_once(path: Path, body: bytes, *, root: Path | None = None) -> bool:
    """Create `path` with `body` unless it exists; True when this call created it.

    The bytes go to a temporary name first and are linked into place, so a reader never
    sees a partly written file and a second writer never replaces the first. The file and
    then its directory are fsynced before True is returned. Every folder below `root`
    (default: the nearest existing folder above `path`) is opened without following links:
    a symbolic link there is refused (OSError ELOOP or ENOTDIR), never written through.
    """
    if root is None:
        root = path.parent
        while not root.is_dir() and root != root.parent:
            root = root.parent
    parts = path.relative_to(root).parts
    with _folder(root, parts[:-1], create=True) as fd:
        return _link_once(fd, parts[-1], body)


def _open_below(fd: int, name: str) -> int:
    """The folder `name` inside the folder open as `fd`; never through a symbolic link."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)


@contextlib.contextmanager
def _folder(root: Path, parts: tuple[str, ...] | list[str], *, create: bool = False) -> Iterator[int]:
    """An open descriptor of ``root/parts...``, each part opened relative to the one above it with
    ``O_NOFOLLOW`` (mkdir -p when `create`, syncing the parent of each folder made)."""
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\0" in part:
            raise OSError(f"{part!r} is not a name inside the store")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            try:
                below = _open_below(fd, part)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
                    os.mkdir(part, dir_fd=fd)
                    os.fsync(fd)  # the new folder survives a power loss
                below = _open_below(fd, part)
            os.close(fd)
            fd = below
        yield fd
    finally:
        os.close(fd)


def _link_once(fd: int, name: str, body: bytes) -> bool:
    """`write_once` inside the open folder `fd`."""
    tmp = f".tmp-{secrets.token_hex(8)}.part"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
    try:
        with os.fdopen(out, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        except FileExistsError:
            return False
        os.fsync(fd)  # the new entry survives a power loss once we say "created"
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)


def _read_below(root: Path, parts: list[str], limit: int) -> bytes | None:
    """The file ``root/parts...`` (None when absent), never through a symbolic link; TooLarge past `limit`."""
    try:
        with _folder(root, parts[:-1]) as fd:
            file = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except FileNotFoundError:
        return None
    with os.fdopen(file, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{'/'.join(parts)} is not a regular file")
        if info.st_size > limit:
            raise TooLarge(f"{info.st_size} bytes, more than the {limit} accepted")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"more than the {limit} bytes accepted")
    return data


def _list_below(root: Path, parts: list[str]) -> list[str]:
    """Every regular file below ``root/parts...`` (relative to root); links are neither listed nor followed."""
    try:
        with _folder(root, parts) as fd:
            return list(_files(fd, "/".join(parts)))
    except FileNotFoundError:  # nothing archived there (yet); a file gone mid-walk is skipped in _files
        return []


def _files(fd: int, base: str) -> Iterator[str]:
    for path, _dirs, names, dirfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        rel = path.removeprefix(".").strip("/")
        for name in names:
            if name.startswith(".tmp-"):  # write_once's partial files
                continue
            try:
                if not stat.S_ISREG(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                    continue  # a link (never followed), a FIFO, a socket
            except FileNotFoundError:
                continue  # gone since it was listed
            yield "/".join(p for p in (base, rel, name) if p)


class FileStore:
    """``file:DIR``: the same keys as paths below a directory, never leaving it (no link followed)."""

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
        return _list_below(self.root, under.split("/") if under else [])

    async def keys(self, under: str = "") -> list[str]:
        try:
            return await asyncio.to_thread(self._keys, under)
        except OSError as exc:
            raise StoreError(f"{self.uri}: listing failed: {exc}") from exc

    async def read(self, key: str, *, limit: int = DOCUMENT_LIMIT) -> bytes | None:
        try:
            return await asyncio.to_thread(_read_below, self.root, key.split("/"), limit)
        except TooLarge as exc:
            raise TooLarge(f"{self.location(key)}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{self.location(key)}: {exc}") from exc

    async def create(self, key: str, body: bytes, *, content_type: str = "application/json",
                     encoding: str | None = None) -> bool:  # fmt: skip
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)  # the root, as given
            return await asyncio.to_thread(write_once, self.path(key), body, root=self.root)
        except OSError as exc:
            raise StoreError(f"{self.location(key)}: {exc}") from exc
