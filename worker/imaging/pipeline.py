"""Run a PipelineSpec on one input: the ordered list of steps, imgproxy-style.

    open_source (header, limits) -> decode: shrink-on-load thumbnail when a resize comes
    first (or only rotate/flip/flop steps precede it: they then run on the shrunk image) or
    there are no steps (then once, at the largest variant's size), else a full
    decode -> orient + sRGB -> steps -> [memory copy when several variants share it]
    -> per variant: resize, fit to format, encode

Runs in a worker thread (libvips releases the GIL); must not touch asyncio. Every
failure leaves as PixqError: permanent codes for bad input, TIMEOUT when ``cancel`` is
set, PROCESSING_FAILED for anything unexpected.
"""

import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pyvips

from pixq import formats
from pixq.errors import ErrorCode, PixqError
from pixq.limits import Limits
from pixq.spec import (BlurStep, CropStep, FlipStep, FlopStep, GrayscaleStep, PipelineSpec,
                       ResizeOptions, ResizeStep, RotateStep, SharpenStep, Step, Variant)
from worker.imaging import analyze, colour, crop, effects, encode, load, resize
from worker.imaging.geometry import ResizePlan, round_half_up
from worker.imaging.load import Source, vips_message


@dataclass(frozen=True)
class Rendered:
    """One encoded output, ready to store."""

    name: str
    data: bytes
    width: int
    height: int
    format: str
    extension: str


@dataclass(frozen=True)
class Processed:
    """A job's whole result: one Rendered per variant, what the input is (its header:
    worker.imaging.metadata), and the analysis when the spec asks for it."""

    outputs: list[Rendered]
    input: dict[str, Any]
    analysis: dict[str, Any] | None = None


def process(data: bytes, spec: PipelineSpec, limits: Limits,
            cancel: threading.Event | None = None) -> list[Rendered]:
    """Return one Rendered per variant, or raise PixqError (see module docstring)."""
    return process_job(data, spec, limits, cancel).outputs


def process_job(data: bytes, spec: PipelineSpec, limits: Limits,
                cancel: threading.Event | None = None) -> Processed:
    """Run the spec: outputs, input metadata and (``spec.analyze``) analysis, or raise PixqError."""
    guard = Guard(cancel)
    try:
        return _run(data, spec, limits, guard)
    except PixqError:
        raise
    except pyvips.Error as exc:
        guard.check()
        raise classify(exc, data) from None
    except Exception as exc:  # noqa: BLE001 - the contract: nothing else escapes
        guard.check()
        raise PixqError(ErrorCode.PROCESSING_FAILED, f"processing failed: {type(exc).__name__}: {exc}") from None
    finally:
        if isinstance(cancel, Cancellation):
            cancel.release()


def _run(data: bytes, spec: PipelineSpec, limits: Limits, guard: "Guard") -> Processed:
    source = load.open_source(data, limits)
    guard.check()
    analysis = None
    if spec.analyze is not None:
        analysis = analyze.analyze(source, spec.analyze)
        guard.check()
    if not spec.variants:
        return Processed([], source.metadata, analysis)  # analysis only: no image decoded for output
    steps = list(spec.steps)
    # Decode keeping the input's profile when any variant keeps it and the input has one that
    # can be kept (colour.decide); render converts the variants that do not keep it.
    keep = (any(variant.icc_profile == "keep" for variant in spec.variants)
            and colour.decide(load.header_of(source), keep_profile=True).keeps_profile)
    if not steps and all(variant.resize is not None for variant in spec.variants):
        # Resizes only: one shrink-on-load decode at the largest size any variant needs,
        # every variant planned against the input's own (oriented) size.
        reference = (source.info.oriented_width, source.info.oriented_height)
        plans = [resize.plan(*reference, variant.resize) for variant in spec.variants]
        for plan in plans:
            check_output(plan.scaled, limits)
        image = _shared_thumbnail(source, plans, keep)
    else:
        reference = None
        plans = [None] * len(spec.variants)
        first_resize = _leading_resize(steps)
        if first_resize is not None:
            turns, step, steps = steps[:first_resize], steps[first_resize], steps[first_resize + 1:]
            image = _resize_on_load(source, step, limits, keep, turns, guard)
        else:
            image = _decode(source, steps, keep)
        for step in steps:
            guard.check()
            image = apply_step(image, step, limits)
    if len(spec.variants) > 1:
        image = guard.watch(image).copy_memory()  # decoded once, shared by the variants
    outputs = []
    for variant, plan in zip(spec.variants, plans):
        guard.check()
        outputs.append(render(source, image, variant, plan, limits, guard))
    return Processed(outputs, source.metadata, analysis)


def _shared_thumbnail(source: Source, plans: list[ResizePlan], keep: bool) -> pyvips.Image:
    """Shrink on load to the biggest scaled size among the plans (never above the input)."""
    width, height = source.info.oriented_width, source.info.oriented_height
    scale = min(Fraction(1), max(max(Fraction(plan.scaled[0], width), Fraction(plan.scaled[1], height))
                                 for plan in plans))
    if len(plans) == 1:
        size = plans[0].scaled if scale < 1 or plans[0].scaled == (width, height) else (width, height)
    else:
        size = (max(1, round_half_up(width * scale)), max(1, round_half_up(height * scale)))
    return colour.to_srgb(load.thumbnail(source, *size, keep_profile=keep), profile_applied=True, keep_profile=keep)


_TURNS = (RotateStep, FlipStep, FlopStep)
"""Steps that only move pixels around a right-angle grid: they commute with a resize."""


def _leading_resize(steps: list[Step]) -> int | None:
    """Index of the first step if it is a resize, or of a resize that only rotate/flip/flop
    steps precede (those then run after a shrink-on-load instead of on the full-size
    decode: the same geometry, a fraction of the pixels); None otherwise."""
    for index, step in enumerate(steps):
        if isinstance(step, ResizeStep):
            return index
        if not isinstance(step, _TURNS):
            return None
    return None


def _resize_on_load(source: Source, step: ResizeOptions, limits: Limits, keep: bool,
                    turns: list[Step], guard: "Guard") -> pyvips.Image:
    """Shrink on load to the resize's scaled size, apply ``turns`` (rotate/flip/flop steps
    that came before the resize, now on the small image), then crop or pad to the box.
    The plan is made against the input as the turns leave it, so the result has the size
    and placement the steps in their order give. A turn that reads rows out of order
    (rotate, flip) gets a memory copy of the shrunk image: the loader is sequential (the
    decode-first path held the whole full-size image for it instead)."""
    width, height = source.info.oriented_width, source.info.oriented_height
    swaps = sum(isinstance(turn, RotateStep) and turn.angle in (90, 270) for turn in turns) % 2 == 1
    plan = resize.plan(*((height, width) if swaps else (width, height)), step)
    check_output(plan.scaled, limits)
    scaled = (plan.scaled[1], plan.scaled[0]) if swaps else plan.scaled
    image = colour.to_srgb(load.thumbnail(source, *scaled, keep_profile=keep), profile_applied=True,
                           keep_profile=keep)
    if any(isinstance(turn, FlipStep) or (isinstance(turn, RotateStep) and turn.angle) for turn in turns):
        image = guard.watch(image).copy_memory()
    for turn in turns:
        image = apply_step(image, turn, limits)
    return resize.finish(image, plan, step.gravity, getattr(step, "background", "#ffffff"))


def _decode(source: Source, steps: list[Step], keep: bool) -> pyvips.Image:
    """Full-size decode, oriented and converted to sRGB unless ``keep`` (still lazy)."""
    reorders = source.info.orientation not in (1, 2) or any(
        isinstance(step, (RotateStep, FlipStep)) or (isinstance(step, CropStep) and step.gravity in
                                                     ("attention", "entropy")) for step in steps)
    image = load.decode(source, access="random" if reorders else "sequential")
    return colour.to_srgb(colour.orient(image), keep_profile=keep)


def apply_step(image: pyvips.Image, step: Step, limits: Limits) -> pyvips.Image:
    if isinstance(step, ResizeStep):
        plan = resize.plan(image.width, image.height, step)
        check_output(plan.scaled, limits)
        return resize.finish(resize.scale(image, plan), plan, step.gravity, step.background)
    if isinstance(step, CropStep):
        return crop.crop(image, step)
    if isinstance(step, RotateStep):
        return effects.rotate(image, step)
    if isinstance(step, FlipStep):
        return effects.flip(image)
    if isinstance(step, FlopStep):
        return effects.flop(image)
    if isinstance(step, BlurStep):
        return effects.blur(image, step)
    if isinstance(step, SharpenStep):
        return effects.sharpen(image, step)
    if isinstance(step, GrayscaleStep):
        return effects.grayscale(image)
    raise PixqError(ErrorCode.PROCESSING_FAILED, f"unknown step {type(step).__name__}")


def render(source: Source, image: pyvips.Image, variant: Variant, plan: ResizePlan | None,
           limits: Limits, guard: "Guard") -> Rendered:
    """One variant: resize (``plan`` precomputed against the input size, else against the
    image), fit to the output format, encode."""
    options = variant.resize
    if options is not None:
        if plan is None:
            plan = resize.plan(image.width, image.height, options)
            check_output(plan.scaled, limits)
        out = resize.finish(resize.scale(image, plan), plan, options.gravity, variant.background)
    else:
        out = image
    fmt = encode.output_format(variant.format, source.info.format, out.hasalpha())
    if variant.icc_profile != "keep" or not formats.output(fmt).icc:
        out = colour.kept_to_srgb(out)  # only another variant's "keep" left a profile attached
    out = encode.prepare(out, fmt, variant.background)
    check_output((out.width, out.height), limits, fmt)
    data = encode.encode(guard.watch(out), fmt, variant)
    guard.check()
    return Rendered(variant.name, data, out.width, out.height, fmt, formats.output(fmt).extension)


def check_output(size: tuple[int, int], limits: Limits, fmt: str | None = None) -> None:
    """OUTPUT_TOO_LARGE over MAX_OUTPUT_PIXELS, or over the output format's largest side (pixq.formats)."""
    width, height = size
    if width * height > limits.max_output_pixels:
        raise PixqError(ErrorCode.OUTPUT_TOO_LARGE,
                        f"output would be {width}x{height}, over MAX_OUTPUT_PIXELS={limits.max_output_pixels}")
    max_side = formats.output(fmt).max_side if fmt is not None else None
    if max_side is not None and max(width, height) > max_side:
        raise PixqError(ErrorCode.OUTPUT_TOO_LARGE, f"{fmt} cannot hold {width}x{height} (max side {max_side})")


_INPUT_ERRORS = ("load", "vipsjpeg", "vipspng", "libpng", "gif", "webp", "tiff", "heif", "uhdr",
                 "premature", "truncated", "corrupt", "read error", "not a known", "bad ")


def classify(exc: pyvips.Error, data: bytes) -> PixqError:
    """A libvips failure: bad input data (INVALID_IMAGE) or anything else (PROCESSING_FAILED).

    Decoding is lazy, so a truncated input usually fails inside the *save*, and only libvips'
    error text says the input was at fault. That text comes from one process-wide buffer,
    which a job failing at the same time on another thread may have taken first: then the
    message names nothing but the save. So before calling a failure PROCESSING_FAILED, the
    input is decoded once more in full; if that fails too, the input is what is wrong."""
    text = str(exc).lower()
    detail = text.split("\n", 1)[1] if "\n" in text else text
    if any(marker in detail for marker in _INPUT_ERRORS) or not decodes_fully(data):
        return PixqError(ErrorCode.INVALID_IMAGE, f"cannot decode input: {vips_message(exc)}")
    return PixqError(ErrorCode.PROCESSING_FAILED, f"processing failed: {vips_message(exc)}")


def decodes_fully(data: bytes) -> bool:
    """Does every pixel of the input decode (truncation included)? Only on the failure path."""
    try:
        pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="truncated").avg()
        return True
    except pyvips.Error:
        return False


class Cancellation(threading.Event):
    """The job timeout's cancel flag: setting it also kills every libvips image registered
    with it. (The alternative, an "eval" progress callback polling the flag, calls into
    Python, taking the GIL, on every libvips tick; its cost was within the noise of our
    measurements, but this needs no callback at all. set_kill is a flag libvips checks
    between tiles, safe to set from another thread.)"""

    def __init__(self) -> None:
        super().__init__()
        self._images: list[pyvips.Image] = []
        self._lock = threading.Lock()

    def register(self, image: pyvips.Image) -> None:
        with self._lock:
            self._images.append(image)
            if self.is_set():
                image.set_kill(True)

    def set(self) -> None:
        with self._lock:
            super().set()
            for image in self._images:
                image.set_kill(True)

    def release(self) -> None:
        """Drop the registered images once the pipeline is done with them, in its own thread.
        Otherwise the last reference goes with the Cancellation on the event loop (the caller's
        local), and libvips frees the whole pipeline there: teardown work on the loop's thread,
        serialised with every other job's plumbing (issue 16)."""
        with self._lock:
            self._images.clear()


class Guard:
    """Job timeout: when ``cancel`` is set, kill the libvips computation in progress and raise
    TIMEOUT at the next check. A Cancellation kills directly; a plain Event is polled from
    libvips' eval progress signal (slower, kept for callers that pass one)."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise PixqError(ErrorCode.TIMEOUT, "processing cancelled: job timeout")

    def watch(self, image: pyvips.Image) -> pyvips.Image:
        if self.cancel is None:
            return image
        if isinstance(self.cancel, Cancellation):
            self.cancel.register(image)
            return image
        cancel = self.cancel

        def on_eval(target: pyvips.Image, _progress: object) -> None:
            if cancel.is_set():
                target.set_kill(True)

        image.set_progress(True)
        image.signal_connect("eval", on_eval)
        return image
