"""The analysis an analyze job returns (``result.analysis``): EXIF subset, dominant colour,
BlurHash placeholder, 64-bit perceptual hash.

Everything pixel-based comes from one small shrink-on-load libvips thumbnail (ANALYSIS_SIZE
on the longer side, oriented, sRGB, alpha flattened on white), so the cost barely depends
on the input's size: a JPEG decodes at 1/8 scale. The hash libraries are pure Python and
read plain lists of pixels, so they add no image library of their own:

* ``blurhash`` (PyPI ``blurhash``, the reference algorithm in Python): 4x3 components for
  a landscape image, 3x4 for a portrait one, from the thumbnail.
* ``dhash`` (PyPI ``dhash``): the row difference hash of a 9x9 grey reduction, 64 bits as
  16 hex digits. Near-duplicates (re-encoded, resized, lightly edited) differ in a few
  bits: compare with the Hamming distance (``dhash.get_num_bits_different``); up to about
  10 of 64 is the usual "same picture" threshold.
* dominant colour: the pixels of the thumbnail are binned in a 16x16x16 RGB histogram;
  the answer is the mean colour of the most populated bin (ties: the lower bin index), so
  it is a colour that is really in the image, not an average of unlike ones.
"""

from typing import Any

import blurhash
import dhash
import pyvips

from pixq.spec import AnalyzeOptions
from worker.imaging import colour
from worker.imaging.load import Source, read_thumbnail
from worker.imaging.metadata import exif_subset

ANALYSIS_SIZE = 32
"""Longest side of the thumbnail every pixel feature is computed from."""
_BINS = 16


def analyze(source: Source, options: AnalyzeOptions) -> dict[str, Any]:
    """``{exif, dominant_color, blurhash, dhash}`` for an opened input (see module docstring)."""
    assert source.header is not None
    rgb = _small_rgb(source).copy_memory()  # tiny; read twice below (a sequential load cannot be)
    pixels = bytes(rgb.write_to_memory())
    width, height = rgb.width, rgb.height
    rows = [[pixels[(y * width + x) * 3:(y * width + x) * 3 + 3] for x in range(width)] for y in range(height)]
    return {
        "exif": exif_subset(source.header, options.include_gps),
        "dominant_color": dominant_color(pixels),
        "blurhash": blurhash.encode(rows, *((4, 3) if width >= height else (3, 4))),
        "dhash": perceptual_hash(rgb),
    }


def _small_rgb(source: Source) -> pyvips.Image:
    """The input as an 8-bit sRGB thumbnail, at most ANALYSIS_SIZE a side, oriented."""
    profile = colour.decide(source.header).thumbnail_options()  # the engine's one colour decision
    image = read_thumbnail(source.data, ANALYSIS_SIZE, height=ANALYSIS_SIZE, **profile)
    image = colour.to_srgb(image, profile_applied=True)  # 8-bit sRGB or grey, alpha kept
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    if image.bands == 1:
        image = image.colourspace("srgb")
    return image if image.format == "uchar" else image.cast("uchar")


def dominant_color(pixels: bytes) -> str:
    """``#rrggbb``: mean of the most populated bin of a 16x16x16 RGB histogram."""
    step = 256 // _BINS
    counts: dict[int, list[int]] = {}
    for offset in range(0, len(pixels), 3):
        r, g, b = pixels[offset], pixels[offset + 1], pixels[offset + 2]
        key = (r // step * _BINS + g // step) * _BINS + b // step
        bucket = counts.setdefault(key, [0, 0, 0, 0])
        bucket[0] += 1
        bucket[1] += r
        bucket[2] += g
        bucket[3] += b
    _key, (count, r, g, b) = max(counts.items(), key=lambda item: (item[1][0], -item[0]))
    return "#{:02x}{:02x}{:02x}".format(*(round(total / count) for total in (r, g, b)))


def perceptual_hash(rgb: pyvips.Image) -> str:
    """The 64-bit row dHash of a 9x9 grey reduction of ``rgb``, as 16 hex digits."""
    grey = rgb.colourspace("b-w").thumbnail_image(9, height=9, size="force", no_rotate=True)
    grey = grey.extract_band(0) if grey.bands > 1 else grey
    row_hash, _column_hash = dhash.dhash_row_col(list(bytes(grey.cast("uchar").write_to_memory())), size=8)
    return f"{row_hash:016x}"
