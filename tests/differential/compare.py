"""Compare two encoded images, pixq's and sharp's: size, format, bands, depth, then pixels.

Pure measurement (no pass/fail policy: test_vs_sharp.py holds the tolerances and the named,
accepted differences). Pixel figures are on an 8-bit scale, over every band, after bringing both
images to the same representation:
  * 16-bit outputs are reduced to 8 bits (pixq always writes 8 bits; sharp keeps 16 in PNG);
  * a grey image compared with a colour one is expanded to sRGB (pixq keeps grey one band,
    sharp writes three), and ``chroma`` says how far the colour one is from grey;
  * with alpha, colours are premultiplied first, so the undefined colour of fully transparent
    pixels (libvips and sharp leave different values there) does not count.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

_SIXTEEN = {"ushort", "short", "uint", "int"}


@dataclass(frozen=True)
class Picture:
    """What a decoder says about one encoded output."""

    width: int
    height: int
    bands: int
    format: str
    """the loader's format: jpeg, png, webp or heif (AVIF)."""
    sixteen_bit: bool
    grey: bool
    alpha: bool


@dataclass(frozen=True)
class Difference:
    pixq: Picture
    sharp: Picture
    mad: float | None
    """mean absolute difference per band and pixel, 0-255 scale (None: sizes differ)."""
    max: float | None
    """largest absolute difference of any band of any pixel."""
    chroma: float | None
    """when pixq is grey and sharp colour: sharp's largest |R-G|, |G-B| (0: a grey image in 3 bands)."""

    @property
    def same_size(self) -> bool:
        return (self.pixq.width, self.pixq.height) == (self.sharp.width, self.sharp.height)


def describe(image: pyvips.Image) -> Picture:
    loader = str(image.get("vips-loader"))
    fmt = loader.removesuffix("load_buffer").removesuffix("load")
    return Picture(image.width, image.height, image.bands, "heif" if fmt == "heif" else fmt,
                   image.format in _SIXTEEN, image.bands <= 2, bool(image.hasalpha()))


def _eight_bit(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB or 8-bit grey (a 16-bit PNG's interpretation is rgb16 / grey16)."""
    grey = image.bands <= 2
    image = image.colourspace("b-w" if grey else "srgb")
    return image if image.format == "uchar" else image.cast("uchar")


def _premultiplied(image: pyvips.Image) -> pyvips.Image:
    """Colour bands times alpha / 255, alpha kept, as float: transparent pixels all compare equal."""
    if not image.hasalpha():
        return image.cast("float")
    colour = image.extract_band(0, n=image.bands - 1).cast("float")
    alpha = image.extract_band(image.bands - 1).cast("float")
    return (colour * (alpha / 255.0)).bandjoin(alpha)


def compare(pixq_bytes: bytes, sharp_bytes: bytes) -> Difference:
    left = pyvips.Image.new_from_buffer(pixq_bytes, "")
    right = pyvips.Image.new_from_buffer(sharp_bytes, "")
    a, b = describe(left), describe(right)
    if (a.width, a.height) != (b.width, b.height):
        return Difference(a, b, None, None, None)
    x, y = _eight_bit(left), _eight_bit(right)
    chroma = None
    if x.bands <= 2 < y.bands:
        colour = y.extract_band(0, n=3).cast("int")
        chroma = max((colour[0] - colour[1]).abs().max(), (colour[1] - colour[2]).abs().max())
        x = x.colourspace("srgb")
    elif y.bands <= 2 < x.bands:
        y = y.colourspace("srgb")
    if x.hasalpha() != y.hasalpha():
        # one side dropped or added alpha: compare colours, the band counts already tell the story
        x = x.extract_band(0, n=x.bands - 1) if x.hasalpha() else x
        y = y.extract_band(0, n=y.bands - 1) if y.hasalpha() else y
    diff = (_premultiplied(x) - _premultiplied(y)).abs()
    return Difference(a, b, round(diff.avg(), 3), round(diff.max(), 1), chroma)
