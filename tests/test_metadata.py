"""The engine's input metadata (every job) and analysis (analyze jobs), with pinned values for
the vendored fixture photos (tests/fixtures). A pinned hash that changes means a changed
algorithm, library or libvips: re-pin only after checking the new value is still right."""

import pyvips
import pytest

from pixq.errors import ErrorCode, PixqError
from pixq.spec import to_pipeline
from tests.fixtures import fixture
from tests.imaging.conftest import make_limits
from worker.imaging import load, process_job
from worker.imaging.metadata import icc_description

CMYK = "sharp/Channel_digital_image_CMYK_color.jpg"
PHOTO = "sharp/2569067123_aca715a2ee_o.jpg"


def analyze(data: bytes, **parameters):
    return process_job(data, to_pipeline("analyze", parameters), make_limits())


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@pytest.mark.parametrize("name, expected", [
    (CMYK, dict(width=500, height=333, format="jpeg", bands=4, has_alpha=False, space="cmyk",
                icc_description="U.S. Web Coated (SWOP) v2", orientation=1, frames=1)),   # ICC v2 'desc'
    ("sharp/Landscape_6.jpg", dict(width=600, height=450, format="jpeg", bands=3, has_alpha=False, space="srgb",
                                   icc_description="Generic RGB Profile", orientation=6, frames=1)),  # stored 450x600
    ("sharp/gain-map.jpg", dict(width=3840, height=2160, format="jpeg", bands=3, has_alpha=False, space="srgb",
                                icc_description="sRGB Gamut with sRGB Transfer", orientation=1, frames=1)),
    ("sharp/with-alpha.png", dict(width=256, height=192, format="png", bands=4, has_alpha=True, space="srgb",
                                  icc_description=None, orientation=1, frames=1)),
    ("sharp/animated-loop-3.gif", dict(width=370, height=285, format="gif", bands=4, has_alpha=True, space="srgb",
                                       icc_description=None, orientation=1, frames=10)),
    ("sharp/Flag_of_the_Netherlands-16bit.png", dict(width=900, height=600, format="png", bands=3, has_alpha=False,
                                                     space="rgb16", icc_description=None, orientation=1, frames=1)),
    ("sharp/prophoto.png", dict(width=1, height=1, format="png", bands=3, has_alpha=False, space="srgb",
                                icc_description="ProPhoto RGB", orientation=1, frames=1)),
])
def test_every_job_carries_the_inputs_metadata(name, expected):
    data = fixture(name).read_bytes()
    resized = process_job(data, to_pipeline("resize", {"width": 16}), make_limits())
    assert resized.input == expected
    assert resized.analysis is None and len(resized.outputs) == 1
    assert analyze(data).input == expected  # the same description whatever the job


def test_metadata_comes_from_the_header_alone():
    """A truncated JPEG cannot be decoded, yet its metadata is there: nothing was decoded for it."""
    source = load.open_source(fixture("sharp/truncated.jpg").read_bytes(), make_limits())
    assert source.metadata["format"] == "jpeg" and source.metadata["width"] > 0
    with pytest.raises(PixqError) as info:
        process_job(source.data, to_pipeline("resize", {"width": 16}), make_limits())
    assert info.value.code == ErrorCode.INVALID_IMAGE


def test_icc_v4_description_and_broken_profiles():
    image = (pyvips.Image.black(4, 4, bands=3) + 90).cast("uchar").copy(interpretation="srgb")
    v4 = bytes(image.icc_export(output_profile="srgb").get("icc-profile-data"))
    assert v4[8] == 4 and icc_description(v4) == "sRGB"  # libvips' built-in v4 profile, 'mluc'
    assert icc_description(b"") is None
    assert icc_description(v4[:140]) is None  # tag table cut short
    assert icc_description(b"\0" * 128 + b"\xff\xff\xff\xff" + b"desc" + b"\xff" * 8) is None


def test_analysis_of_a_camera_photo_is_pinned():
    result = analyze(fixture(CMYK).read_bytes())
    assert result.outputs == []
    assert result.analysis == {
        "exif": {"make": "Canon", "model": "Canon EOS 300D DIGITAL", "lens": None, "taken_at": "2004-03-20T14:54:55"},
        "dominant_color": "#575a57",
        "blurhash": "L9EV~I53?aMy8{?IIVa|?1esWCk8",
        "dhash": "b3726236a2831637",
    }


def test_analysis_of_a_photo_without_exif_is_pinned():
    result = analyze(fixture(PHOTO).read_bytes())
    assert result.analysis == {
        "exif": {"make": None, "model": None, "lens": None, "taken_at": None},
        "dominant_color": "#2a2726",
        "blurhash": "LBDbQU^j0#58N1-U%1bvV@%2-:%2",
        "dhash": "2335c3e6d4d2f3e3",
    }


def test_the_hash_finds_near_duplicates_and_tells_other_pictures_apart():
    photo = fixture(PHOTO).read_bytes()
    original = analyze(photo).analysis["dhash"]
    smaller_jpeg = pyvips.Image.thumbnail_buffer(photo, 600).jpegsave_buffer(Q=40)
    smaller_webp = pyvips.Image.thumbnail_buffer(photo, 300).webpsave_buffer(Q=50)
    assert hamming(original, analyze(smaller_jpeg).analysis["dhash"]) <= 4
    assert hamming(original, analyze(smaller_webp).analysis["dhash"]) <= 4
    assert hamming(original, analyze(fixture("sharp/gain-map.jpg").read_bytes()).analysis["dhash"]) > 16


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
def test_the_analysis_sees_the_upright_image(kind):
    """The eight EXIF orientations of one photo hash alike: the thumbnail is auto-oriented."""
    hashes = [analyze(fixture(f"sharp/{kind}_{n}.jpg").read_bytes()).analysis["dhash"] for n in range(1, 9)]
    assert max(hamming(hashes[0], other) for other in hashes) <= 3


def test_dominant_colour_is_the_largest_colour_not_the_average():
    """70% red and 30% blue: an average would be purple, the dominant colour is red."""
    red = (pyvips.Image.black(70, 100, bands=3) + [220, 20, 30]).cast("uchar")
    blue = (pyvips.Image.black(30, 100, bands=3) + [10, 20, 200]).cast("uchar")
    image = red.join(blue, "horizontal").copy(interpretation="srgb").write_to_buffer(".png")
    assert analyze(image).analysis["dominant_color"] == "#dc141e"


def gps_jpeg() -> bytes:
    """A generated JPEG with camera fields and a GPS position (Sydney, 12.5 m)."""
    image = (pyvips.Image.black(64, 48, bands=3) + [200, 100, 50]).cast("uchar").copy(interpretation="srgb")
    for name, value in {
        "exif-ifd0-Make": "PixqCam", "exif-ifd0-Model": "Model (X) 1",
        "exif-ifd2-LensModel": "50mm f/1.8", "exif-ifd2-DateTimeOriginal": "2024:05:06 07:08:09",
        "exif-ifd3-GPSLatitudeRef": "S", "exif-ifd3-GPSLatitude": "33/1 51/1 3540/100",
        "exif-ifd3-GPSLongitudeRef": "E", "exif-ifd3-GPSLongitude": "151/1 12/1 3600/100",
        "exif-ifd3-GPSAltitude": "125/10",
    }.items():
        image.set_type(pyvips.GValue.gstr_type, name, value)
    return image.jpegsave_buffer()


def test_gps_only_when_asked():
    data = gps_jpeg()
    camera = {"make": "PixqCam", "model": "Model (X) 1", "lens": "50mm f/1.8", "taken_at": "2024-05-06T07:08:09"}
    assert analyze(data).analysis["exif"] == camera  # no "gps" key at all: privacy by default
    assert analyze(data, include_gps=False).analysis["exif"] == camera
    assert analyze(data, include_gps=True).analysis["exif"] == {
        **camera, "gps": {"latitude": -33.859833, "longitude": 151.21, "altitude": 12.5}}


def test_gps_asked_for_but_absent_is_null():
    assert analyze(fixture(CMYK).read_bytes(), include_gps=True).analysis["exif"]["gps"] is None


def test_analyze_applies_the_input_limits():
    with pytest.raises(PixqError) as info:
        analyze(fixture("sharp/giant-image.jpg").read_bytes())
    assert info.value.code == ErrorCode.IMAGE_TOO_LARGE


def test_a_spec_without_analysis_reads_as_before_in_the_message():
    """Workers of the previous release forbid unknown spec keys: only an analyze job's spec
    names ``analyze``, and the job message carries it through unchanged."""
    import uuid

    from pixq.jobs import JobInput, JobMessage, JobMetadata, JobType

    assert "analyze" not in to_pipeline("resize", {"width": 10}).model_dump(mode="json")
    spec = to_pipeline("analyze", {"include_gps": "true"})
    message = JobMessage(job_id=str(uuid.uuid4()), type=JobType.ANALYZE, spec=spec,
                         input=JobInput(storage_key="inputs/default/x"), metadata=JobMetadata(created_at="now"))
    read = JobMessage.model_validate_json(message.model_dump_json())
    assert read.spec.analyze.include_gps is True and read.spec.variants == []
