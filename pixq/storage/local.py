"""Local-filesystem storage: the embedded default for `make up` and single-host installs."""

import asyncio
import errno
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

from pixq.errors import ErrorCode, PixqError
from pixq.storage.base import ObjectHead


_NO_OBJECT_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG})
"""OS errors saying a key names no object and never will: missing, a directory, a path through
a file, a name too long. Unlike a disk or permission problem, retrying cannot help."""


def _names_no_object(exc: OSError) -> bool:
    return exc.errno in _NO_OBJECT_ERRNOS


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._root_text = str(self.root)
        self._root_prefix = self._root_text.rstrip("/") + "/"

    def path_of(self, key: str) -> Path:
        """The file behind a key; refuses keys that would escape the root.

        Lexical (``normpath``), not ``resolve``: a key's ``..`` and absolute forms are caught the
        same, without an lstat per path component on every read and write (0.3 ms of worker CPU
        per job, issue 16). pixq writes regular files only, so a symlink inside the root is one an
        operator put there, and it is followed."""
        path = os.path.normpath(os.path.join(self._root_text, key))
        if not path.startswith(self._root_prefix) or "\0" in key:
            raise PixqError(ErrorCode.INVALID_PARAMETERS, "storage_key must be a relative path inside the bucket")
        return Path(path)

    async def ensure_ready(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot create {self.root}: {exc}") from None

    async def ping(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)

    def _atomic_write(self, key: str, write) -> None:
        target = self.path_of(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    write(handle)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot write {key}: {exc}") from None

    def _link(self, key: str, path: Path) -> bool:
        """Hard-link a spooled upload into place (no copy) when it is on the same filesystem."""
        target = self.path_of(key)
        staged = target.parent / f".link-{uuid.uuid4().hex}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, staged)
        except OSError:
            return False
        os.replace(staged, target)
        return True

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        def copy(handle) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, 1024 * 1024)

        if not await asyncio.to_thread(self._link, key, path):
            await asyncio.to_thread(self._atomic_write, key, copy)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self.write_bytes, key, data, content_type)

    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._atomic_write(key, lambda handle: handle.write(data))

    async def get_bytes(self, key: str, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self.read_bytes, key, max_bytes)

    def read_bytes(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes. A key that can never be read (nothing there, a directory, a path
        through a file, a name too long) is INPUT_NOT_FOUND, a permanent failure; only other
        I/O errors are STORAGE_UNAVAILABLE, which workers retry."""
        path = self.path_of(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            if _names_no_object(exc):
                raise PixqError(ErrorCode.INPUT_NOT_FOUND, f"no object at {key}") from None
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot read {key}: {exc}") from None
        if len(data) > max_bytes:
            raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE, f"input is larger than MAX_INPUT_BYTES={max_bytes}")
        return data

    async def size(self, key: str) -> int | None:
        """Size of the object at ``key``; None when there is none (a directory is not an object)."""
        head = await self.head(key)
        return head.size if head is not None else None

    async def delete(self, key: str) -> None:
        try:
            self.path_of(key).unlink(missing_ok=True)
        except OSError:
            pass

    async def head(self, key: str) -> ObjectHead | None:
        """The tag is size and mtime_ns: every write here replaces the file (os.replace), so new
        bytes mean a new mtime."""
        try:
            info = self.path_of(key).stat()
        except OSError as exc:
            if _names_no_object(exc):
                return None  # no object can exist under that name here (not an outage)
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot stat {key}: {exc}") from None
        if not stat.S_ISREG(info.st_mode):
            return None
        return ObjectHead(size=info.st_size, etag=f"{info.st_size}-{info.st_mtime_ns}")

    async def delete_prefix(self, prefix: str) -> int:
        folder = self.path_of(prefix.rstrip("/"))

        def remove() -> int:
            removed = 0
            for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
                if path.is_file() or path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed += 1
                else:
                    path.rmdir()
            folder.rmdir()
            return removed

        if not folder.is_dir():
            return 0
        try:
            return await asyncio.to_thread(remove)
        except OSError as exc:
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot delete {prefix}: {exc}") from None

    def presigned_url(self, key: str, ttl: float, response_headers: dict[str, str] | None = None) -> str | None:
        return None

    async def read_head(self, key: str, max_bytes: int) -> bytes:
        path = self.path_of(key)

        def read() -> bytes:
            with open(path, "rb") as handle:
                return handle.read(max_bytes)

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            if _names_no_object(exc):
                raise PixqError(ErrorCode.INPUT_NOT_FOUND, f"no object at {key}") from None
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot read {key}: {exc}") from None

    async def copy(self, source: str, target: str) -> None:
        """A hard link when possible (instant, no extra space), else an atomic copy. Either
        way the target is a new directory entry: replacing the source later (a new upload to
        the same key is a new file, os.replace) leaves the target unchanged."""
        path = self.path_of(source)
        if not path.is_file():
            raise PixqError(ErrorCode.INPUT_NOT_FOUND, f"no object at {source}")
        await self.put_file(target, path, "application/octet-stream")

    def presigned_post(self, key: str, ttl: float, max_bytes: int, content_type: str | None) -> None:
        return None  # the API serves local uploads itself (api.handlers.uploads.receive_upload)
