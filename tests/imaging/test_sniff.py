"""pixq.sniff: magic bytes + header-only load at submit, and check_spec_fits."""

import time

import pytest
import pyvips

from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobType
from pixq.limits import TRUSTED_INPUT_FORMATS, UNTRUSTED_INPUT_FORMATS
from pixq.sniff import ImageInfo, apply_loader_policy, check_spec_fits, detect_format, sniff, sniff_bytes
from pixq.spec import to_pipeline
from tests.fixtures import fixture
from tests.imaging.conftest import make_limits, quadrants


@pytest.mark.parametrize("suffix, fmt", [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp"),
                                         (".gif", "gif"), (".tif", "tiff"), (".avif", "avif")])
def test_sniff_generated(tmp_path, limits, suffix, fmt):
    path = tmp_path / f"in{suffix}"
    quadrants(64, 48).write_to_file(str(path))
    info = sniff(path, limits)
    assert (info.format, info.width, info.height, info.pages, info.has_alpha) == (fmt, 64, 48, 1, fmt == "gif")  # libvips loads GIF as RGBA


def test_sniff_alpha_pages_orientation(limits):
    assert sniff(fixture("sharp/with-alpha.png"), limits).has_alpha
    animated = sniff(fixture("sharp/animated-loop-3.webp"), limits)
    assert animated.format == "webp" and animated.pages > 1
    portrait = sniff(fixture("sharp/Portrait_6.jpg"), limits)
    assert portrait.orientation == 6 and portrait.oriented_width == portrait.height


def test_sniff_reads_an_ultrahdr_jpeg_header_through_jpegload_as_the_worker_does(limits):
    path = fixture("sharp/gain-map.jpg")
    assert pyvips.Image.new_from_file(str(path)).get("vips-loader").startswith("uhdrload")  # libvips' own pick
    from_file, from_bytes = sniff(path, limits), sniff_bytes(path.read_bytes(), limits)
    assert from_file.loader == "jpegload" and from_bytes.loader == "jpegload_buffer"
    assert from_file.format == from_bytes.format == "jpeg"
    assert (from_file.width, from_file.height) == (from_bytes.width, from_bytes.height)
    assert (from_file.width, from_file.height) == (pyvips.Image.new_from_file(str(path)).width,
                                                   pyvips.Image.new_from_file(str(path)).height)


@pytest.mark.parametrize("content, code", [
    (b"hello world, not an image", ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (b"", ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (b"%PDF-1.4\n%%EOF", ErrorCode.UNSUPPORTED_FORMAT),
    (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", ErrorCode.UNSUPPORTED_FORMAT),
    (b"BM" + b"\0" * 60, ErrorCode.UNSUPPORTED_FORMAT),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, ErrorCode.INVALID_IMAGE),
])
def test_sniff_rejects(tmp_path, limits, content, code):
    path = tmp_path / "upload"
    path.write_bytes(content)
    with pytest.raises(PixqError) as info:
        sniff(path, limits)
    assert info.value.code == code and info.value.http_status in (415, 422)


def test_svg_allowed_when_enabled(tmp_path):
    path = tmp_path / "a.svg"
    path.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg' width='30' height='20'/>")
    limits = make_limits(allowed_input_formats=TRUSTED_INPUT_FORMATS | UNTRUSTED_INPUT_FORMATS)
    try:
        assert sniff(path, limits).format == "svg"
    finally:
        apply_loader_policy(make_limits())  # restore the default process-wide block
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_file(str(path))  # the SVG loader itself is blocked again
    with pytest.raises(PixqError) as info:
        sniff(path, make_limits())
    assert info.value.code == ErrorCode.UNSUPPORTED_FORMAT


def test_sniff_size_limits(tmp_path):
    path = tmp_path / "in.png"
    quadrants(100, 100).write_to_file(str(path))
    with pytest.raises(PixqError) as info:
        sniff(path, make_limits(max_input_bytes=10))
    assert info.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    with pytest.raises(PixqError) as info:
        sniff(path, make_limits(max_input_pixels=9999))
    assert info.value.code == ErrorCode.IMAGE_TOO_LARGE and info.value.http_status == 413


@pytest.mark.parametrize("name", ["giant-image.jpg", "65536-uint32-limit.png"])
def test_sniff_bombs_fast_from_header(name):
    started = time.monotonic()
    with pytest.raises(PixqError) as info:
        sniff(fixture(f"sharp/{name}"), make_limits(max_input_bytes=1 << 30))
    assert info.value.code == ErrorCode.IMAGE_TOO_LARGE
    assert time.monotonic() - started < 2.0  # header only, no decode


def test_sniff_too_many_frames():
    with pytest.raises(PixqError) as info:
        sniff(fixture("sharp/animated-loop-3.gif"), make_limits(max_animation_frames=2))
    assert info.value.code == ErrorCode.TOO_MANY_FRAMES


@pytest.mark.parametrize("head, fmt", [
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "avif"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heif"),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", "avif"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomiso2", None),
    (b"\xef\xbb\xbf<?xml version='1.0'?><svg>", "svg"),
    (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", None), (b"GIF89a", "gif"), (b"<html>", None),
])
def test_detect_format(head, fmt):
    assert detect_format(head) == fmt


def _spec(job_type, **params):
    return to_pipeline(JobType(job_type), params)


def test_check_spec_fits():
    info = ImageInfo(format="jpeg", width=400, height=300)
    check_spec_fits(_spec("crop", x=300, y=200, width=100, height=100), info)
    check_spec_fits(_spec("crop", width=1000, height=1000), info)  # gravity crops clamp
    check_spec_fits(_spec("resize", width=10), info)
    with pytest.raises(PixqError) as exc:
        check_spec_fits(_spec("crop", x=301, y=200, width=100, height=100), info)
    assert exc.value.code == ErrorCode.CROP_OUT_OF_BOUNDS and exc.value.http_status == 422


def test_check_spec_fits_follows_orientation_and_steps():
    rotated = ImageInfo(format="jpeg", width=400, height=300, orientation=6)  # upright 300x400
    check_spec_fits(_spec("crop", x=0, y=0, width=300, height=400), rotated)
    with pytest.raises(PixqError):
        check_spec_fits(_spec("crop", x=0, y=0, width=400, height=300), rotated)
    info = ImageInfo(format="png", width=400, height=300)
    chained = _spec("pipeline", steps=[{"op": "flip"}, {"op": "crop", "x": 0, "y": 0, "width": 100, "height": 100},
                                       {"op": "crop", "x": 50, "y": 50, "width": 60, "height": 10}])
    with pytest.raises(PixqError):
        check_spec_fits(chained, info)
    after_resize = _spec("pipeline", steps=[{"op": "resize", "width": 2000, "enlarge": True},
                                            {"op": "crop", "x": 1000, "y": 0, "width": 100, "height": 100}])
    check_spec_fits(after_resize, info)  # only the worker knows the size after a resize
