"""thumbor 7.x (PyPI, its own venv, default PIL engine) on the same inputs, P processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request

import aiohttp

from bench.common import WORK, Inputs, free_port, log, median, run_async

CONF = """# written by bench/thumbor.py
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {root!r}
ALLOW_UNSAFE_URL = True
STORAGE = 'thumbor.storages.no_storage'   # no cache of originals: every request loads the file
RESULT_STORAGE = None                     # no cache of results
QUALITY = 80
PROGRESSIVE_JPEG = False                  # pixq writes baseline JPEG (thumbor's default is progressive)
RESPECT_ORIENTATION = True                # pixq auto-rotates too
PRESERVE_EXIF_INFO = False                # pixq strips metadata: no EXIF,
PRESERVE_EXIF_COPYRIGHT_INFO = False      # not even the copyright field,
PRESERVE_IPTC_INFO = False                # no IPTC, and no ICC profile (the URL's strip_icc() filter)
AUTO_WEBP = False
"""
# What each side does with colour and metadata, for the same request (fit 512x512, JPEG Q80):
# * pixq: converts an embedded ICC profile to sRGB (a real transform; gain-map.jpg's profile is
#   "sRGB Gamut with sRGB Transfer", so here it changes little but still costs) and writes no
#   metadata at all (keep=none): no EXIF, XMP, IPTC or ICC.
# * thumbor 7.8, PIL engine: has no ICC conversion for JPEG output (ensure_srgb runs only for
#   AVIF) and by default copies the input's profile into the output. There is no setting to
#   drop it: the strip_icc() filter does, per request. With it and the settings above the
#   output carries no metadata either, like pixq's; its colours are the profile-less pixel
#   values, i.e. thumbor skips the transform pixq pays for (less work, not the same colours).
# * Encoder: both baseline; pixq sets optimize_coding (Huffman tables per image), thumbor's
#   Pillow does not (no setting), so thumbor skips that pass too.

FORMATS = {"jpeg": ("photo.jpg", "gainmap.jpg"), "png": ("photo.png", "gainmap.png"),
           "webp": ("photo.webp", "gainmap.webp")}
PIXQ_WORKLOAD = {"jpeg": "resize-jpeg", "png": "resize-png", "webp": "resize-webp"}


def url_for(port: int, name: str) -> str:
    return f"http://127.0.0.1:{port}/unsafe/fit-in/512x512/filters:format(jpeg):quality(80):strip_icc()/{name}"


class Thumbor:
    def __init__(self, exe, inputs: Inputs, processes: int) -> None:
        self.exe = exe
        self.port = free_port()
        self.processes = processes
        self.conf = WORK / "thumbor.conf"
        root = str(next(iter(inputs.files.values())).parent)
        self.conf.write_text(CONF.format(root=root))
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Thumbor":
        self.log = open(WORK / "thumbor.log", "wb")
        self.proc = subprocess.Popen([str(self.exe), "--ip", "127.0.0.1", "--port", str(self.port), "--conf",
                                      str(self.conf), "--processes", str(self.processes), "-l", "warning"],
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthcheck", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"thumbor did not start; see {WORK / 'thumbor.log'}")

    def __exit__(self, *exc) -> None:
        import os
        import signal
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the parent and its forks
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


async def drive(urls: list[str], concurrency: int) -> dict:
    """Closed loop: ``concurrency`` connections, each sends its next request when one returns."""
    pending = list(urls)
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def client() -> None:
            nonlocal errors
            while pending:
                url = pending.pop()
                async with session.get(url) as response:
                    body = await response.read()
                    if response.status != 200 or not body.startswith(b"\xff\xd8"):
                        errors += 1
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(urls), "seconds": round(elapsed, 3), "rps": round(len(urls) / elapsed, 2),
            "errors": errors}


def output_metadata(url: str) -> dict:
    """Which metadata segments thumbor's JPEG output carries (the gain-map photo has ICC and EXIF)."""
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
    return {"icc": b"ICC_PROFILE\0" in body, "exif": b"Exif\0\0" in body, "xmp": b"http://ns.adobe.com/xap/" in body,
            "progressive": b"\xff\xc2" in body}


def measure_thumbor(exe, inputs: Inputs, processes: int, repeats: int, seconds: float) -> dict:
    out = {"processes": processes, "client_connections": 2 * processes}
    with Thumbor(exe, inputs, processes) as server:
        for fmt, names in FORMATS.items():
            urls = [url_for(server.port, names[i % 2]) for i in range(4 * processes)]
            run_async(drive(urls, 2 * processes))  # warm-up
            probe = run_async(drive(urls, 2 * processes))["rps"]
            count = max(8 * processes, min(600, int(probe * seconds) // 2 * 2))
            urls = [url_for(server.port, names[i % 2]) for i in range(count)]
            runs = [run_async(drive(urls, 2 * processes)) for _ in range(repeats)]
            out[fmt] = {"requests": count, "runs": [r["rps"] for r in runs], "rps": median([r["rps"] for r in runs]),
                        "errors": sum(r["errors"] for r in runs),
                        "output_metadata": output_metadata(url_for(server.port, names[1]))}
            log(f"thumbor {fmt}: {out[fmt]['rps']} rps ({count} requests x {repeats}, errors {out[fmt]['errors']})")
    return out
