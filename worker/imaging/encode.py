"""Last step: choose the output format and encode one variant."""

import pyvips

from pixq.spec import OutputOptions
from worker.imaging.resize import parse_colour

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif", "gif": "gif", "tiff": "tif"}
ALPHA_FORMATS = frozenset({"png", "webp", "avif", "gif", "tiff"})


def output_format(requested: str, input_format: str, has_alpha: bool) -> str:
    """``same`` keeps the input format when pixq can write it, else PNG with alpha, JPEG without."""
    if requested != "same":
        return requested
    if input_format in EXTENSIONS:
        return input_format
    return "png" if has_alpha else "jpeg"


def prepare(image: pyvips.Image, fmt: str, background: str) -> pyvips.Image:
    """Fit the image to what the format can hold: flatten alpha onto ``background`` for JPEG."""
    if image.hasalpha() and fmt not in ALPHA_FORMATS:
        rgb = parse_colour(background)[:3]
        if image.bands == 2:
            rgb = [round(0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])]
        image = image.flatten(background=rgb)
        if image.format != "uchar":
            image = image.cast("uchar")
    return image


def save_options(fmt: str, options: OutputOptions) -> dict:
    keep = {"keep": "none"} if options.strip else {}
    if fmt == "jpeg":
        return {"Q": options.quality, "interlace": options.progressive, "optimize_coding": True, **keep}
    if fmt == "png":
        return {"interlace": options.progressive, "compression": 6, **keep}
    if fmt == "webp":
        return {"Q": options.quality, "lossless": options.lossless, "effort": 4, **keep}
    if fmt == "avif":
        return {"Q": options.quality, "lossless": options.lossless, "effort": 2,
                "compression": "av1", **keep}
    if fmt == "gif":
        return {"interlace": options.progressive, "effort": 7, **keep}
    if fmt == "tiff":
        return {"compression": "deflate", "predictor": "horizontal", **keep}
    raise ValueError(f"no encoder for {fmt}")


def encode(image: pyvips.Image, fmt: str, options: OutputOptions) -> bytes:
    """Encode (this is where libvips actually computes the pixels)."""
    return image.write_to_buffer("." + EXTENSIONS[fmt], **save_options(fmt, options))
