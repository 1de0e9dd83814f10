"""pixq.formats is the one table of format facts: check it against libvips and against the
modules that read it (sniffing, request validation, encoding)."""

import pyvips
import pytest

from pixq import formats
from pixq.errors import PixqError
from pixq.jobs import JobType
from pixq.sniff import detect_format
from pixq.spec import MAX_DIMENSION, OutputOptions, to_pipeline
from tests.imaging.conftest import make_limits
from worker.imaging import encode
from worker.imaging.pipeline import check_output


@pytest.mark.parametrize("name", formats.OUTPUT_NAMES)
def test_every_writable_format_round_trips_through_libvips(name):
    fmt = formats.get(name)
    half_transparent = (pyvips.Image.black(24, 16, bands=4) + [64, 128, 255, 0]).cast("uchar")
    image = half_transparent.insert(pyvips.Image.black(12, 16, bands=4) + [64, 128, 255, 255], 0, 0)
    image = image.cast("uchar").copy(interpretation="srgb")
    data = encode.encode(encode.prepare(image, name, "#ffffff"), name, OutputOptions(format=name))
    assert detect_format(data[:64]) == name
    loaded = pyvips.Image.new_from_buffer(data, "")
    assert name in formats.read_by(loaded.get("vips-loader"))
    assert (loaded.width, loaded.height) == (24, 16)
    assert loaded.hasalpha() == fmt.alpha
    assert fmt.mime.startswith("image/") and fmt.extension and formats.mime_of(name) == fmt.mime


def test_requests_use_the_table():
    assert MAX_DIMENSION == 16383 == formats.get("webp").max_side
    to_pipeline(JobType.RESIZE, {"width": MAX_DIMENSION})
    with pytest.raises(PixqError):
        to_pipeline(JobType.RESIZE, {"width": MAX_DIMENSION + 1})
    for alias, name in (("JPG", "jpeg"), ("tif", "tiff"), ("WebP", "webp")):
        assert to_pipeline(JobType.RESIZE, {"width": 1, "format": alias}).variants[0].format == name
    with pytest.raises(PixqError):
        to_pipeline(JobType.RESIZE, {"width": 1, "format": "heif"})  # read, never written


def test_output_side_limits_come_from_the_table():
    limits = make_limits(max_output_pixels=10**12)
    check_output((16383, 10), limits, "webp")
    with pytest.raises(PixqError) as refused:
        check_output((16384, 10), limits, "webp")
    assert refused.value.code.value == "OUTPUT_TOO_LARGE"
    check_output((16384, 10), limits, "png")


def test_loaders_name_the_formats_they_read():
    assert formats.read_by("heifload_buffer") == {"heif", "avif"}
    assert formats.read_by("uhdrload_source") == {"jpeg"}
    assert formats.read_by("magickload_buffer") == frozenset() == formats.read_by("")
    assert formats.TRUSTED_INPUT == {"jpeg", "png", "webp", "gif", "tiff", "avif", "heif"}
    assert formats.UNTRUSTED_INPUT == {"svg", "pdf"}
