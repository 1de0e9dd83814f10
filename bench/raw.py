"""The raw libvips baseline: P processes, each a plain loop of pyvips calls, no queue, no I/O.

Each call mirrors what worker/imaging does for the same job (read worker/imaging/pipeline.py,
load.py, colour.py, encode.py): header read, shrink-on-load ``thumbnail_buffer`` (which
auto-rotates) with an sRGB output profile only when the input carries an ICC profile, and
the same encoder options (JPEG Q80 optimize_coding, WebP Q80 effort 4, AVIF Q80 effort 2,
metadata stripped). A crop is a full sequential decode, autorot, (ICC -> sRGB when a
profile is present), extract_area, encode. Each process runs libvips with one thread and
no operation cache, as the worker does by default (VIPS_CONCURRENCY=1, VIPS_CACHE_MAX_OPS=0).
"""

from __future__ import annotations

import multiprocessing
import time

_DATA: dict[str, bytes] = {}


def _init(files: dict[str, str], vips_concurrency: int) -> None:
    import pyvips
    pyvips.concurrency_set(vips_concurrency)
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    for name, path in files.items():
        with open(path, "rb") as handle:
            _DATA[name] = handle.read()


SAVE = {
    "jpeg": (".jpg", {"Q": 80, "interlace": False, "optimize_coding": True, "keep": "none"}),
    "webp": (".webp", {"Q": 80, "lossless": False, "effort": 4, "keep": "none"}),
    "avif": (".avif", {"Q": 80, "lossless": False, "effort": 2, "compression": "av1", "keep": "none"}),
}


def one_job(job: tuple[str, str, dict]) -> int:
    """(endpoint, input name, params) -> output bytes."""
    import pyvips
    endpoint, name, params = job
    data = _DATA[name]
    header = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="error")
    has_profile = header.get_typeof("icc-profile-data") != 0
    if endpoint == "resize":
        profile = {"output_profile": "srgb", "intent": "perceptual"} if has_profile else {}
        image = pyvips.Image.thumbnail_buffer(data, params["width"], height=params["height"],
                                              option_string="fail_on=error", **profile)
    else:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="error").autorot()
        if has_profile:
            image = image.icc_transform("srgb", embedded=True, input_profile="srgb", intent="perceptual")
        image = image.extract_area(params["x"], params["y"], params["width"], params["height"])
    suffix, options = SAVE[params["format"]]
    return len(image.write_to_buffer(suffix, **options))


def naive_job(job: tuple[str, str, dict]) -> int:
    """The raw-pyvips reference of tests/fixtures/README.md: thumbnail_buffer + JPEG Q80, nothing else."""
    import pyvips
    _, name, params = job
    image = pyvips.Image.thumbnail_buffer(_DATA[name], params["width"], height=params["height"])
    return len(image.write_to_buffer(".jpg", Q=80))


def engine_job(job: tuple[str, str, dict]) -> int:
    """The worker's own engine (worker.imaging.process with a cancel Event, as JobRunner
    calls it), in the same loop: separates libvips work from the queue/storage/status plumbing."""
    import threading
    from pixq.jobs import JobType
    from pixq.limits import Limits
    from pixq.settings import Settings
    from pixq.spec import to_pipeline
    from worker.imaging import process
    endpoint, name, params = job
    spec = to_pipeline(JobType(endpoint), params)
    outputs = process(_DATA[name], spec, Limits.from_settings(Settings()), threading.Event())
    return sum(len(output.data) for output in outputs)


class RawPool:
    """P spawned processes holding every input in memory."""

    def __init__(self, processes: int, files: dict[str, str], vips_concurrency: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.processes = processes
        self.pool = ctx.Pool(processes, initializer=_init, initargs=(files, vips_concurrency))

    def measure(self, jobs: list[tuple[str, str, dict]], mode: str = "raw") -> float:
        """jobs/s for the list (already warmed by the caller); mode raw, naive or engine."""
        fn = {"raw": one_job, "naive": naive_job, "engine": engine_job}[mode]
        started = time.perf_counter()
        self.pool.map(fn, jobs, chunksize=1)
        return len(jobs) / (time.perf_counter() - started)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()

    def __enter__(self) -> "RawPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
