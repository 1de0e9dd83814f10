"""Loading levers (issue 15): JPEG through jpegload (UltraHDR as its SDR base image) and the
JPEG shrink-on-load factor chosen like sharp's fast mode."""

import pytest
import pyvips

from pixq.jobs import JobType
from pixq.sniff import ImageInfo
from pixq.spec import to_pipeline
from tests.fixtures import fixture
from tests.imaging.conftest import make_limits
from worker.imaging import load, process


@pytest.fixture(scope="module")
def gain_map() -> load.Source:
    return load.open_source(fixture("sharp/gain-map.jpg").read_bytes(), make_limits())


def test_an_ultrahdr_jpeg_is_read_by_jpegload_from_header_to_pixels(gain_map):
    """libvips' own pick for this file is uhdrload (its header read alone is ~30x slower)."""
    assert pyvips.Image.new_from_buffer(gain_map.data, "").get("vips-loader").startswith("uhdrload")
    assert gain_map.info.format == "jpeg" and gain_map.info.loader.startswith("jpegload")
    assert load.thumbnail(gain_map, 200, 113).get("vips-loader").startswith("jpegload")
    assert load.decode(gain_map).get("vips-loader").startswith("jpegload")


def test_an_ultrahdr_jpeg_keeps_its_size_and_colour(gain_map):
    """200 wide is 112.5 tall: 113, like libvips and sharp. The pixels are libvips' own
    thumbnail of the file (through uhdrload, ICC to sRGB) within MAD 1.5 (the fast
    shrink-on-load factor; 0.0 with libvips' factor)."""
    out = process(gain_map.data, to_pipeline(JobType.RESIZE, {"width": 200, "format": "png"}), make_limits())[0]
    image = pyvips.Image.new_from_buffer(out.data, "")
    assert (out.width, out.height, image.bands) == (200, 113, 3)
    reference = pyvips.Image.thumbnail_buffer(gain_map.data, 200, height=113, size="force",
                                              output_profile="srgb", intent="perceptual")
    assert reference.get("vips-loader").startswith("uhdrload")
    assert (image.cast("float") - reference.cast("float")).abs().avg() <= 1.5


def info(width: int, height: int, orientation: int = 1) -> ImageInfo:
    return ImageInfo(format="jpeg", width=width, height=height, orientation=orientation)


@pytest.mark.parametrize("size, target, libvips, fast", [
    ((2725, 2225), (512, 418), 2, 4),      # shrink 5.3: the photo
    ((3840, 2160), (512, 288), 2, 4),      # 7.5
    ((3840, 2160), (200, 113), 8, 8),      # 19.2
    ((1000, 1000), (250, 250), 2, 2),      # exactly 4: one step less (libjpeg rounding, as sharp)
    ((1000, 1000), (125, 125), 4, 4),      # exactly 8
    ((1000, 1000), (500, 500), 1, 1),      # exactly 2
    ((1000, 1000), (400, 400), 1, 1),      # 2.5: int part 2 is the factor, one step less
    ((1000, 1000), (300, 300), 1, 2),      # 3.3
    ((1000, 1000), (2000, 2000), 1, 1),    # enlarging
])
def test_jpeg_shrink_factor(size, target, libvips, fast):
    assert load.jpeg_shrink(info(*size), *target, fast=False) == libvips
    assert load.jpeg_shrink(info(*size), *target, fast=True) == fast


def test_jpeg_shrink_reads_the_target_in_the_oriented_frame():
    # stored 4000x1000, orientation 6: upright 1000x4000; a 250x1000 target is 4x on both axes
    assert load.jpeg_shrink(info(4000, 1000, orientation=6), 250, 1000, fast=True) == 2
    assert load.jpeg_shrink(info(4000, 1000, orientation=6), 1000, 250, fast=True) == 1


def test_fast_shrink_on_load_stays_close_to_libvips_choice(monkeypatch):
    """The quality cost of the fast factor on the real photo (figures: docs/operations.md)."""
    data = fixture("sharp/2569067123_aca715a2ee_o.jpg").read_bytes()
    spec = to_pipeline(JobType.RESIZE, {"width": 512, "format": "png"})
    fast = pyvips.Image.new_from_buffer(process(data, spec, make_limits())[0].data, "")
    monkeypatch.setattr(load, "FAST_SHRINK_ON_LOAD", False)
    default = pyvips.Image.new_from_buffer(process(data, spec, make_limits())[0].data, "")
    assert (fast.width, fast.height) == (default.width, default.height) == (512, 418)
    assert (fast.cast("float") - default.cast("float")).abs().avg() <= 1.5
