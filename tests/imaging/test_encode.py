"""Encoder options and format fitting (issue 15): AVIF chroma subsampling, and a background
with alpha on a JPEG output (its alpha is ignored: the colour is used opaque, on every path)."""

import pytest
import pyvips

from pixq.jobs import JobType
from pixq.spec import to_pipeline
from tests.imaging.conftest import make_limits, quadrants
from worker.imaging import process


def stripes(width: int = 128, height: int = 64) -> bytes:
    """1 px red/blue columns: colour detail only full-resolution chroma can keep."""
    x = pyvips.Image.xyz(width, height)[0]
    odd = (x % 2) == 1
    red = (pyvips.Image.black(width, height) + [255, 0, 0]).cast("uchar")
    blue = (pyvips.Image.black(width, height) + [0, 0, 255]).cast("uchar")
    return odd.ifthenelse(red, blue).copy(interpretation="srgb").write_to_buffer(".png")


def avif(data: bytes, **params):
    out = process(data, to_pipeline(JobType.RESIZE, {"width": 128, "format": "avif", "quality": 80, **params}),
                  make_limits())[0]
    assert out.format == "avif"
    return out, pyvips.Image.new_from_buffer(out.data, "")


def test_avif_chroma_subsampling_reaches_the_encoder():
    source = pyvips.Image.new_from_buffer(stripes(), "")
    errors, sizes = {}, {}
    for mode in ("4:4:4", "4:2:0", "auto"):
        out, image = avif(stripes(), chroma_subsampling=mode)
        sizes[mode] = len(out.data)
        errors[mode] = (image.cast("float") - source.cast("float")).abs().avg()
    assert errors["4:4:4"] < 10 < errors["4:2:0"]          # 4:2:0 smears the 1 px colour columns
    assert sizes["auto"] == sizes["4:2:0"] != sizes["4:4:4"]  # below quality 90, auto is 4:2:0


def test_avif_default_is_full_chroma_like_sharp():
    out, _ = avif(stripes())
    full, _ = avif(stripes(), chroma_subsampling="4:4:4")
    assert out.data == full.data


@pytest.mark.parametrize("background", ["#ff000000", "#ff000080", "#ff0000"])
def test_jpeg_contain_bars_are_the_background_colour_opaque(background):
    out = process(quadrants(400, 300).write_to_buffer(".png"), to_pipeline(JobType.RESIZE, {
        "width": 200, "height": 200, "fit": "contain", "background": background, "format": "jpeg"}),
        make_limits())[0]
    image = pyvips.Image.new_from_buffer(out.data, "")
    assert image.bands == 3
    assert all(abs(a - b) <= 8 for a, b in zip(image(100, 5), [255, 0, 0]))  # top bar


@pytest.mark.parametrize("background", ["#0000ff00", "#0000ff80", "#0000ff"])
def test_jpeg_flattens_transparent_pixels_onto_the_background_colour_opaque(background):
    transparent = (pyvips.Image.black(64, 64, bands=4)).cast("uchar").copy(interpretation="srgb")
    out = process(transparent.write_to_buffer(".png"), to_pipeline(JobType.RESIZE, {
        "width": 32, "background": background, "format": "jpeg"}), make_limits())[0]
    image = pyvips.Image.new_from_buffer(out.data, "")
    assert image.bands == 3
    assert all(abs(a - b) <= 8 for a, b in zip(image(16, 16), [0, 0, 255]))
