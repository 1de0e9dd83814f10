"""Local images as request bodies: a path, bytes or an open binary file, readable once per attempt.

A retried upload must send the same bytes again: a path is reopened, bytes are reused, and an
open file is rewound to where it stood (one that cannot seek is read into memory once, the only
way to send it twice).
"""

import contextlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

from pixq.client.errors import PixqClientError

FileSource = Union[str, "os.PathLike[str]", bytes, BinaryIO]
"""What may be uploaded: a path (str or PathLike), the bytes, or a binary file object."""

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
          (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))
"""First bytes of the common formats, so a file without an extension still gets a type."""


@dataclass
class LocalFile:
    """One file to send, as many times as a retry needs."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    handle: BinaryIO | None = None
    start: int = 0

    def open(self, files: contextlib.ExitStack) -> BinaryIO | bytes:
        """The body for one attempt (a path's handle is closed with ``files``)."""
        if self.path is not None:
            return files.enter_context(self.path.open("rb"))
        if self.handle is not None:
            self.handle.seek(self.start)
            return self.handle
        assert self.data is not None
        return self.data

    def head(self, size: int = 32) -> bytes:
        if self.path is not None:
            with self.path.open("rb") as handle:
                return handle.read(size)
        if self.handle is not None:
            self.handle.seek(self.start)
            head = self.handle.read(size)
            self.handle.seek(self.start)
            return head
        return (self.data or b"")[:size]

    def content_type(self) -> str:
        """The image/* type from the first bytes, else the name's extension, else octet-stream
        (the API sniffs every upload anyway; this only labels the part)."""
        try:
            return image_type(self.head(), self.name)
        except PixqClientError:
            return "application/octet-stream"


def local_file(source: FileSource, filename: str | None = None) -> LocalFile:
    """``source`` as a LocalFile; a path that is not a file is refused here, before any request."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return LocalFile(filename or "image", data=bytes(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise PixqClientError(f"no such file: {path}")
        return LocalFile(filename or path.name, path=path)
    if hasattr(source, "read"):
        name = filename or Path(getattr(source, "name", "image") or "image").name
        if source.seekable():
            return LocalFile(name, handle=source, start=source.tell())
        return LocalFile(name, data=source.read())
    raise TypeError(f"cannot upload a {type(source).__name__}: give a path, bytes or a binary file")


def image_type(head: bytes, name: str = "") -> str:
    """The image/* media type from the first bytes, else the name's extension."""
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    guessed, _ = mimetypes.guess_type(name)
    if guessed and guessed.startswith("image/"):
        return guessed
    raise PixqClientError(f"cannot tell the image type of {name or 'the data'}; pass content_type='image/...'")
