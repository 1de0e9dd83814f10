"""Run a PipelineSpec on one input: load once, apply the steps, render every variant.

First cut: shrink-on-load thumbnail for resize, extract_area for crop. Runs in a worker
thread (libvips releases the GIL), so it must not touch asyncio.
"""

import threading
from dataclasses import dataclass

import pyvips

from pixq.errors import ErrorCode, PixqError
from pixq.limits import Limits
from pixq.spec import CropStep, PipelineSpec, Variant

_SAVERS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif", "gif": ".gif", "tiff": ".tif"}
_LOADER_FORMAT = {"jpegload": "jpeg", "pngload": "png", "webpload": "webp", "gifload": "gif",
                  "tiffload": "tiff", "heifload": "heif"}


@dataclass(frozen=True)
class Rendered:
    """One encoded output, ready to store."""

    name: str
    data: bytes
    width: int
    height: int
    format: str
    extension: str


def _input_format(image: pyvips.Image) -> str:
    loader = image.get("vips-loader") if image.get_typeof("vips-loader") else ""
    for prefix, fmt in _LOADER_FORMAT.items():
        if loader.startswith(prefix):
            return fmt
    return loader or "unknown"


def _load(data: bytes, limits: Limits) -> pyvips.Image:
    try:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="error")
    except pyvips.Error as exc:
        raise PixqError(ErrorCode.INVALID_IMAGE, f"cannot decode input: {str(exc).splitlines()[0]}") from None
    fmt = _input_format(image)
    if fmt not in limits.allowed_input_formats:
        raise PixqError(ErrorCode.UNSUPPORTED_FORMAT, f"input format {fmt!r} is not accepted")
    if image.width * image.height > limits.max_input_pixels:
        raise PixqError(ErrorCode.IMAGE_TOO_LARGE,
                        f"input is {image.width}x{image.height}, over MAX_INPUT_PIXELS={limits.max_input_pixels}")
    return image


def _crop(image: pyvips.Image, step: CropStep) -> pyvips.Image:
    if step.is_box:
        if step.x + step.width > image.width or step.y + step.height > image.height:
            raise PixqError(ErrorCode.CROP_OUT_OF_BOUNDS,
                            f"crop box {step.x},{step.y} {step.width}x{step.height} is outside the "
                            f"{image.width}x{image.height} image")
        return image.extract_area(step.x, step.y, step.width, step.height)
    return image.smartcrop(min(step.width, image.width), min(step.height, image.height))


def _encode(image: pyvips.Image, variant: Variant, input_format: str) -> Rendered:
    fmt = variant.format
    if fmt == "same":
        fmt = input_format if input_format in _SAVERS else "jpeg"
    suffix = _SAVERS[fmt]
    options = {"strip": variant.strip} if fmt != "gif" else {}
    if fmt in ("jpeg", "webp", "avif", "tiff"):
        options["Q"] = variant.quality
    data = image.write_to_buffer(suffix, **options)
    return Rendered(variant.name, data, image.width, image.height, fmt, suffix.lstrip("."))


def process(data: bytes, spec: PipelineSpec, limits: Limits,
            cancel: threading.Event | None = None) -> list[Rendered]:
    """Return one Rendered per variant, or raise PixqError with a permanent code."""
    image = _load(data, limits)
    input_format = _input_format(image)
    for step in spec.steps:
        if isinstance(step, CropStep):
            image = _crop(image, step)
    outputs = []
    for variant in spec.variants:
        out = image
        if variant.resize is not None:
            size = "down" if not variant.enlarge else "both"
            out = image.thumbnail_image(variant.width or 100000, height=variant.height or 100000, size=size)
        try:
            outputs.append(_encode(out, variant, input_format))
        except pyvips.Error as exc:
            raise PixqError(ErrorCode.INVALID_IMAGE, f"cannot process input: {str(exc).splitlines()[0]}") from None
    return outputs
