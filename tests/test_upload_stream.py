"""The multipart submit is parsed straight off the request stream (api.multipart.FormStream).

Pure-logic tests feed the parser a body cut into chunks of every awkward size (a delimiter
split across two chunks, held-back bytes that only look like a delimiter); the HTTP tests send
such bodies to a real API (redis-server and nats-server) and compare the stored input byte for
byte with what was sent.
"""

import io
from collections.abc import Iterator

import pytest
import pyvips

from api.multipart import FormStream
from api.uploads import _Budget
from pixq import names
from pixq.errors import PixqError
from tests.conftest import running_api

BOUNDARY = "pixqBoundary7MA4YWxkTrZu0gW"


class ChunkedContent:
    """What FormStream reads: aiohttp StreamReader's ``readany``, here in fixed-size chunks."""

    def __init__(self, body: bytes, size: int) -> None:
        self.chunks: Iterator[bytes] = iter([body[i:i + size] for i in range(0, len(body), size)])

    async def readany(self) -> bytes:
        return next(self.chunks, b"")


def encode(parts: list[tuple[str, bytes]], preamble: bytes = b"") -> bytes:
    out = io.BytesIO()
    out.write(preamble)
    for name, content in parts:
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"'.encode())
        out.write(b'; filename="x.png"\r\nContent-Type: image/png' if name == "file" else b"")
        out.write(b"\r\n\r\n" + content + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


async def parse(body: bytes, size: int, budget: int = 1 << 30) -> list[tuple[str, bytes]]:
    form = FormStream(ChunkedContent(body, size), BOUNDARY, _Budget(budget))
    parts = []
    while (part := await form.next_part()) is not None:
        data = bytearray()
        await form.stream_body(data.extend)
        parts.append((part.name, bytes(data)))
    return parts


TRICKY = (b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n-\r\n--\r" + b"\xff" * 100 + b"\r\n--" + BOUNDARY[:5].encode()
          + b"\r")
"""File content with everything that looks like the start of a delimiter (but is not one) and
ends on a prefix of it, so the held-back tail of every chunk is tested."""


@pytest.mark.parametrize("size", [1, 2, 3, 5, len(BOUNDARY) + 3, len(BOUNDARY) + 4, len(BOUNDARY) + 5, 64, 1000,
                                  1 << 20])
async def test_parts_come_out_exactly_whatever_the_chunking(size: int):
    parts = [("width", b"512"), ("file", TRICKY * 7), ("empty", b""), ("spec", b'{"a": 1}')]
    assert await parse(encode(parts, preamble=b"ignored preamble\r\n"), size) == parts


async def test_a_body_without_a_closing_boundary_is_malformed():
    body = encode([("file", TRICKY)])
    for cut in (len(body) - 4, len(body) - len(BOUNDARY) - 8, 10, 0):
        with pytest.raises(ValueError):
            await parse(body[:cut], 7)


async def test_every_byte_read_counts_against_the_budget():
    body = encode([("width", b"8"), ("file", b"x" * 5000)])
    assert len(await parse(body, 100, budget=len(body))) == 2
    with pytest.raises(PixqError) as refused:
        await parse(body, 100, budget=len(body) - 1)
    assert refused.value.code.value == "PAYLOAD_TOO_LARGE"


def png_with_trailer(trailer: bytes) -> bytes:
    """A small PNG and bytes after its IEND chunk, which decoders ignore but storage must keep."""
    return pyvips.Image.black(24, 16).pngsave_buffer() + trailer


async def test_an_upload_is_stored_byte_for_byte(make_settings):
    settings = make_settings("local")
    image = png_with_trailer(TRICKY * 50)
    body = encode([("width", b"8"), ("file", image)], preamble=b"preamble\r\n")

    async def odd_chunks():
        for start in range(0, len(body), 97):
            yield body[start:start + 97]

    async with running_api(settings) as api:
        for data in (body, odd_chunks()):  # one write, and Transfer-Encoding: chunked in 97-byte pieces
            response = await api.post("/api/v1/resize", data=data,
                                      headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
            assert response.status == 202, await response.text()
            job_id = (await response.json())["job_id"]
            stored = settings.storage_dir / names.input_object_key("default", job_id)
            assert stored.read_bytes() == image


async def test_malformed_and_oversized_uploads_are_refused_and_leave_no_file(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "spool"))
    (tmp_path / "spool").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    settings = make_settings("local", max_request_bytes=20_000)
    image = png_with_trailer(b"")
    content_type = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    cases = {
        encode([("file", image)])[:-30]: (400, "INVALID_REQUEST"),  # cut inside the closing boundary
        encode([("file", image + b"\0" * 30_000)]): (413, "PAYLOAD_TOO_LARGE"),  # over MAX_REQUEST_BYTES
        encode([("width", b"8")]): (400, "INVALID_REQUEST"),  # no file part
        encode([("file", image), ("file", image)]): (400, "INVALID_REQUEST"),
        b"no boundary anywhere" * 500: (400, "INVALID_REQUEST"),
    }
    async with running_api(settings) as api:
        for body, (status, code) in cases.items():
            response = await api.post("/api/v1/resize", data=body, headers=content_type)
            assert response.status == status, await response.text()
            assert (await response.json())["error"]["code"] == code
        response = await api.post("/api/v1/resize", data=encode([("file", image)]),
                                  headers={"Content-Type": "multipart/form-data"})
        assert response.status == 400  # no boundary parameter
    assert list((tmp_path / "spool").iterdir()) == []
    assert not (settings.storage_dir / "inputs").exists() or not any((settings.storage_dir / "inputs").rglob("*"))
