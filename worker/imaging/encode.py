"""Last step: choose the output format and encode one variant (format facts: pixq.formats)."""

import pyvips

from pixq import formats
from pixq.spec import OutputOptions
from worker.imaging.resize import parse_colour


def output_format(requested: str, input_format: str, has_alpha: bool) -> str:
    """``same`` keeps the input format when pixq can write it, else PNG with alpha, JPEG without."""
    if requested != "same":
        return requested
    if input_format in formats.OUTPUT_NAMES:
        return input_format
    return "png" if has_alpha else "jpeg"


def prepare(image: pyvips.Image, fmt: str, background: str) -> pyvips.Image:
    """Fit the image to what the format can hold: flatten alpha onto ``background`` (JPEG)."""
    if image.hasalpha() and not formats.output(fmt).alpha:
        rgb = parse_colour(background)[:3]
        if image.bands == 2:
            rgb = [round(0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])]
        image = image.flatten(background=rgb)
        if image.format != "uchar":
            image = image.cast("uchar")
    return image


def save_options(fmt: str, options: OutputOptions) -> dict:
    """The format's saver options (pixq.formats), plus metadata stripping unless ``strip`` is off.

    ``icc_profile: keep`` keeps the ICC profile even when ``strip`` is on: the pixels are in
    that profile's space, and without it they would be read as sRGB (wrong colours)."""
    keep = {"keep": "icc" if options.icc_profile == "keep" else "none"} if options.strip else {}
    return {**formats.output(fmt).save_options(options), **keep}


def encode(image: pyvips.Image, fmt: str, options: OutputOptions) -> bytes:
    """Encode (this is where libvips actually computes the pixels)."""
    return image.write_to_buffer(formats.output(fmt).saver, **save_options(fmt, options))
