"""thumbor 7.x (PyPI, its own venv, default PIL engine) on the same inputs, P processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Callable

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
    """P thumbor servers of one process each, on P ports, with requests spread evenly over them
    (``urls``), as a load balancer in front of thumbor pods would.

    Not one ``--processes P`` server: its forked processes share one listening socket, and the
    kernel hands each new connection to whichever process accepts first. With 4 keep-alive
    connections on 2 processes, all 4 often landed in one process, which then served them on
    one core while the other idled: the same run measured 23–25 or 47–51 rps at random
    (2026-11-30), and the earlier "pixq ≥ thumbor" rows were partly that artefact."""

    def __init__(self, exe, inputs: Inputs, processes: int) -> None:
        self.exe = exe
        self.ports = [free_port() for _ in range(processes)]
        self.processes = processes
        self.conf = WORK / "thumbor.conf"
        root = str(next(iter(inputs.files.values())).parent)
        self.conf.write_text(CONF.format(root=root))
        self.procs: list[subprocess.Popen] = []

    @property
    def port(self) -> int:
        return self.ports[0]

    def urls(self, names: tuple[str, ...], count: int) -> list[str]:
        """``count`` requests alternating ``names``, dealt round-robin over the servers."""
        return [url_for(self.ports[i % len(self.ports)], names[(i // len(self.ports)) % len(names)])
                for i in range(count)]

    def __enter__(self) -> "Thumbor":
        self.log = open(WORK / "thumbor.log", "wb")
        for port in self.ports:
            self.procs.append(subprocess.Popen(
                [str(self.exe), "--ip", "127.0.0.1", "--port", str(port), "--conf", str(self.conf),
                 "--processes", "1", "-l", "warning"],
                stdout=self.log, stderr=self.log, start_new_session=True))
        deadline = time.monotonic() + 60
        waiting = list(self.ports)
        while waiting and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{waiting[0]}/healthcheck", timeout=1) as response:
                    if response.status == 200:
                        waiting.pop(0)
            except OSError:
                time.sleep(0.2)
        if waiting:
            self.__exit__()
            raise RuntimeError(f"thumbor did not start; see {WORK / 'thumbor.log'}")
        return self

    def __exit__(self, *exc) -> None:
        import os
        import signal
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []
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


def paired_runners(server: Thumbor, processes: int) -> dict[str, Callable[[int], dict]]:
    """Per pixq workload (PIXQ_WORKLOAD), a thumbor run of ``count`` requests for the same photos
    in that format, for bench.throughput.measure_paired to run right after each of the stack's
    runs: raw, pixq and thumbor then alternate, so a drift in the shared machine's speed lands on
    every side of the ratios (pixq's figure used to come from section 1, minutes apart)."""
    def runner(names: tuple[str, ...]) -> Callable[[int], dict]:
        return lambda count: run_async(drive(server.urls(names, count), 2 * processes))
    return {PIXQ_WORKLOAD[fmt]: runner(names) for fmt, names in FORMATS.items()}


def thumbor_figures(server: Thumbor, processes: int, stack_figures: dict) -> dict:
    """thumbor's side of section 2 from the runs measure_paired alternated with pixq's."""
    out: dict = {"processes": processes, "client_connections": 2 * processes}
    for fmt, names in FORMATS.items():
        runs = stack_figures[PIXQ_WORKLOAD[fmt]]["alongside_runs"]
        out[fmt] = {"requests": runs[0]["requests"], "runs": [r["rps"] for r in runs],
                    "rps": median([r["rps"] for r in runs]), "errors": sum(r["errors"] for r in runs),
                    "output_metadata": output_metadata(url_for(server.port, names[1]))}
        log(f"thumbor {fmt}: {out[fmt]['rps']} rps ({out[fmt]['requests']} requests x {len(runs)}, alternating "
            f"with pixq's runs, errors {out[fmt]['errors']})")
    return out
