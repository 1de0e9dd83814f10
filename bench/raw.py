"""The raw libvips baseline: P processes, each a plain loop of pyvips calls, no queue, no I/O.

Each call does what a correct output needs and nothing more (issue 16): decode with
shrink-on-load, honour the EXIF orientation, convert an embedded ICC profile to sRGB (only
when there is one: asking libvips' thumbnail for an sRGB output without an input profile
makes it transform anyway, doubling a 6 MP JPEG's time), resize, encode with metadata
stripped and the worker's encoder options (JPEG Q80 optimize_coding, WebP Q80 effort 4,
AVIF Q80 effort 2). That is the same work worker/imaging does for these jobs (pipeline.py,
load.py, colour.py, encode.py), so a stack / raw ratio measures the stack's plumbing, not
two engines' choices:

* a JPEG is read by ``jpegload`` with the shrink-on-load factor sharp's fast mode picks
  (``shrink_factor``, the engine's FAST_SHRINK_ON_LOAD default), then ``thumbnail_image``
  finishes. libvips' own ``thumbnail_buffer`` would load an UltraHDR JPEG (gain-map.jpg) with
  ``uhdrload``, decoding a gain map no SDR output needs, and would load the 6 MP photo at 1/2
  where 1/4 already covers 512 px. That variant stays as the "libvips-default" reference.
* PNG and WebP go through ``thumbnail_buffer`` (WebP shrinks on load there; PNG cannot).
* A crop is a full sequential decode, autorot, ICC -> sRGB when a profile is present,
  extract_area, encode.

Each process runs libvips with one thread and no operation cache, as the worker does by
default (VIPS_CONCURRENCY=1, VIPS_CACHE_MAX_OPS=0).
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


def shrink_factor(header, width: int, height: int) -> int:
    """JPEG shrink-on-load factor for a fit inside width x height: the largest of 8, 4, 2 that
    keeps the decoded image at least the target size, one step less when the shrink is that
    factor's integer part (libjpeg rounds the scaled size up). sharp's fast mode; 2725x2225 to
    512: 1/4 (libvips' thumbnail: 1/2)."""
    swaps = header.get_typeof("orientation") != 0 and header.get("orientation") in (5, 6, 7, 8)
    target_w, target_h = (height, width) if swaps else (width, height)
    shrink = max(header.width / target_w, header.height / target_h)  # fit inside: the larger ratio wins
    factor = 8 if shrink >= 8 else 4 if shrink >= 4 else 2 if shrink >= 2 else 1
    return factor // 2 if factor > 1 and int(shrink) == factor else factor


def one_job(job: tuple[str, str, dict]) -> int:
    """(endpoint, input name, params) -> output bytes.

    The input is read in place through a memory ``pyvips.Source`` (the bytes stay alive in
    _DATA): the ``*_buffer`` loaders would hand libvips a fresh copy of the whole input on
    every call, three times a job here, which is the caller's overhead, not the image's."""
    import pyvips
    endpoint, name, params = job
    data = _DATA[name]
    is_jpeg = data[:3] == b"\xff\xd8\xff"

    def load(**options):
        # a JPEG through jpegload: the generic loader picks uhdrload for an UltraHDR file, whose
        # header read alone parses the gain map's metadata too (1.9 ms against 0.2 ms, gain-map.jpg)
        source = pyvips.Source.new_from_memory(data)
        if is_jpeg:
            return pyvips.Image.jpegload_source(source, access="sequential", fail_on="error", **options)
        return pyvips.Image.new_from_source(source, "", access="sequential", fail_on="error", **options)

    header = load()
    has_profile = header.get_typeof("icc-profile-data") != 0
    if endpoint == "resize":
        profile = {"output_profile": "srgb", "intent": "perceptual"} if has_profile else {}
        if is_jpeg:
            loaded = load(shrink=shrink_factor(header, params["width"], params["height"]))
            image = loaded.thumbnail_image(params["width"], height=params["height"], **profile)
        else:
            image = pyvips.Image.thumbnail_source(pyvips.Source.new_from_memory(data), params["width"],
                                                  height=params["height"], option_string="fail_on=error", **profile)
    else:
        image = load().autorot()
        if has_profile:
            image = image.icc_transform("srgb", embedded=True, input_profile="srgb", intent="perceptual")
        image = image.extract_area(params["x"], params["y"], params["width"], params["height"])
    suffix, options = SAVE[params["format"]]
    return len(image.write_to_buffer(suffix, **options))


def default_job(job: tuple[str, str, dict]) -> int:
    """libvips' own choices: ``thumbnail_buffer`` picks the loader (uhdrload for UltraHDR) and a
    conservative shrink-on-load; ICC -> sRGB when there is a profile; the worker's encoder."""
    import pyvips
    _, name, params = job
    data = _DATA[name]
    header = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="error")
    profile = ({"output_profile": "srgb", "intent": "perceptual"}
               if header.get_typeof("icc-profile-data") != 0 else {})
    image = pyvips.Image.thumbnail_buffer(data, params["width"], height=params["height"],
                                          option_string="fail_on=error", **profile)
    return len(image.write_to_buffer(".jpg", **SAVE["jpeg"][1]))


def naive_job(job: tuple[str, str, dict]) -> int:
    """The raw-pyvips reference of tests/fixtures/README.md: thumbnail_buffer + JPEG Q80, nothing else."""
    import pyvips
    _, name, params = job
    image = pyvips.Image.thumbnail_buffer(_DATA[name], params["width"], height=params["height"])
    return len(image.write_to_buffer(".jpg", Q=80))


def engine_job(job: tuple[str, str, dict]) -> int:
    """The worker's own engine (worker.imaging.process with a Cancellation, as JobRunner calls
    it: a plain threading.Event would take the slower path of a libvips progress callback), in
    the same loop: separates libvips work from the queue/storage/status plumbing."""
    from pixq.jobs import JobType
    from pixq.limits import Limits
    from pixq.settings import Settings
    from pixq.spec import to_pipeline
    from worker.imaging import Cancellation, process
    global _LIMITS
    if _LIMITS is None:  # once: building Settings from the environment costs ~4 ms, the worker does it once too
        _LIMITS = Limits.from_settings(Settings())
    endpoint, name, params = job
    spec = to_pipeline(JobType(endpoint), params)
    outputs = process(_DATA[name], spec, _LIMITS, Cancellation())
    return sum(len(output.data) for output in outputs)


_LIMITS = None


MODES = {"raw": one_job, "naive": naive_job, "engine": engine_job, "libvips-default": default_job}


def timed_job(item: tuple[str, tuple[str, str, dict]]) -> float:
    """(mode, job) -> that one job's wall time in ms (for latency: one job at a time)."""
    mode, job = item
    started = time.perf_counter()
    MODES[mode](job)
    return (time.perf_counter() - started) * 1000


class RawPool:
    """P spawned processes holding every input in memory."""

    def __init__(self, processes: int, files: dict[str, str], vips_concurrency: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.processes = processes
        self.pool = ctx.Pool(processes, initializer=_init, initargs=(files, vips_concurrency))

    def measure(self, jobs: list[tuple[str, str, dict]], mode: str = "raw") -> float:
        """jobs/s for the list (already warmed by the caller); mode: a key of MODES."""
        fn = MODES[mode]
        started = time.perf_counter()
        self.pool.map(fn, jobs, chunksize=1)
        return len(jobs) / (time.perf_counter() - started)

    def job_times(self, jobs: list[tuple[str, str, dict]], mode: str = "engine") -> list[float]:
        """Each job's wall time in ms, one job per process at a time (chunksize 1)."""
        return self.pool.map(timed_job, [(mode, job) for job in jobs], chunksize=1)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()

    def __enter__(self) -> "RawPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
