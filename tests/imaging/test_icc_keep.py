"""``icc_profile: keep`` (issue 16): an RGB input's embedded profile goes into the output, its
pixels untouched by any transform; the default (``srgb``) still converts and embeds nothing."""

import pytest
import pyvips

from pixq.errors import PixqError
from pixq.jobs import JobType
from pixq.spec import OutputOptions, PipelineSpec, to_pipeline
from tests.fixtures import fixture
from tests.helpers import form, wait_for_status
from tests.imaging.conftest import make_limits
from tests.test_jobs_api import download
from worker.imaging import process

PROFILE = bytes(pyvips.Image.new_from_file(str(fixture("sharp/prophoto.png"))).get("icc-profile-data"))
"""A ProPhoto RGB profile: far enough from sRGB that a transform moves every pixel (MAD ~19)."""


def photo(profile: bytes | None, suffix: str = ".png") -> bytes:
    """A real photo (400 px wide), tagged with ``profile`` or untagged."""
    image = pyvips.Image.new_from_file(str(fixture("sharp/2569067123_aca715a2ee_o.jpg"))).thumbnail_image(400)
    image = image.copy_memory()
    if profile is not None:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    return image.write_to_buffer(suffix, **({"Q": 95} if suffix == ".jpg" else {}))


def render(data: bytes, job_type: str = JobType.RESIZE, **params) -> pyvips.Image:
    size = {"x": 20, "y": 10, "width": 200, "height": 150} if job_type == JobType.CROP else {"width": 300}
    out = process(data, to_pipeline(job_type, {**size, "quality": 95, **params}), make_limits())[0]
    return pyvips.Image.new_from_buffer(out.data, "")


def profile_of(image: pyvips.Image) -> bytes | None:
    return bytes(image.get("icc-profile-data")) if image.get_typeof("icc-profile-data") else None


def mad(a: pyvips.Image, b: pyvips.Image) -> float:
    bands = min(3, a.bands, b.bands)
    return (a.extract_band(0, n=bands).cast("float") - b.extract_band(0, n=bands).cast("float")).abs().avg()


@pytest.mark.parametrize("job_type", [JobType.RESIZE, JobType.CROP])  # shrink-on-load and decode-first paths
@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif", "tiff"])
def test_keep_embeds_the_input_profile_and_transforms_nothing(job_type, fmt):
    tagged, untagged = photo(PROFILE), photo(None)
    kept = render(tagged, job_type, format=fmt, icc_profile="keep")
    assert profile_of(kept) == PROFILE  # byte for byte, although strip is on (the default)
    # No transform: the same pixels as the untagged photo, which nothing converts.
    assert mad(kept, render(untagged, job_type, format=fmt)) == 0.0
    converted = render(tagged, job_type, format=fmt)
    assert profile_of(converted) is None
    assert mad(kept, converted) > 10  # the default did convert ProPhoto to sRGB


def test_keep_on_a_jpeg_input_and_with_strip_off():
    tagged = photo(PROFILE, ".jpg")
    assert profile_of(render(tagged, format="jpeg", icc_profile="keep")) == PROFILE
    assert profile_of(render(tagged, format="jpeg", icc_profile="keep", strip=False)) == PROFILE


def test_gif_holds_no_profile_so_keep_converts_to_srgb():
    tagged = photo(PROFILE)
    kept = render(tagged, format="gif", icc_profile="keep")
    assert profile_of(kept) is None
    assert mad(kept, render(tagged, format="gif")) == 0.0


def test_variants_may_differ_one_keeps_one_converts():
    tagged = photo(PROFILE)
    spec = PipelineSpec(variants=[{"name": "wide", "width": 300, "format": "png", "icc_profile": "keep"},
                                  {"name": "web", "width": 300, "format": "png"}])
    wide, web = (pyvips.Image.new_from_buffer(out.data, "") for out in process(tagged, spec, make_limits()))
    assert profile_of(wide) == PROFILE and profile_of(web) is None
    alone = render(tagged, format="png")  # sRGB converted at decode, not after the shared resize
    assert mad(web, alone) < 1.0
    assert mad(wide, web) > 10


def test_grayscale_step_after_keep_is_srgb_grey_without_the_rgb_profile():
    tagged = photo(PROFILE)
    spec = PipelineSpec(steps=[{"op": "grayscale"}], variants=[{"name": "g", "format": "png", "icc_profile": "keep"}])
    grey = pyvips.Image.new_from_buffer(process(tagged, spec, make_limits())[0].data, "")
    assert grey.bands == 1 and profile_of(grey) is None
    default = PipelineSpec(steps=[{"op": "grayscale"}], variants=[{"name": "g", "format": "png"}])
    assert (grey - pyvips.Image.new_from_buffer(process(tagged, default, make_limits())[0].data, "")).abs().max() == 0


@pytest.mark.parametrize("name", ["sharp/Channel_digital_image_CMYK_color.jpg", "sharp/concert.jpg"])
def test_cmyk_and_grey_inputs_are_converted_as_by_default(name):
    data = fixture(name).read_bytes()
    kept = render(data, format="jpeg", icc_profile="keep")
    assert profile_of(kept) is None
    assert mad(kept, render(data, format="jpeg")) == 0.0


def test_default_is_srgb_and_leaves_the_spec_unchanged():
    assert OutputOptions().icc_profile == "srgb"
    spec = to_pipeline(JobType.RESIZE, {"width": 10})
    assert "icc_profile" not in spec.model_dump()["variants"][0]  # an older worker still reads it
    kept = to_pipeline(JobType.RESIZE, {"width": 10, "icc_profile": "keep"})
    assert kept.model_dump()["variants"][0]["icc_profile"] == "keep"
    with pytest.raises(PixqError, match="icc_profile"):
        to_pipeline(JobType.RESIZE, {"width": 10, "icc_profile": "adobe"})


async def test_keep_through_http_upload_to_download(api, worker):
    """The option as a user sends it (a multipart field) reaches the worker: the downloaded
    output carries the input's profile; the same upload without it carries none."""
    tagged = photo(PROFILE, ".jpg")
    outputs = {}
    for mode in ("keep", None):
        fields = {"width": 200, "format": "webp", **({"icc_profile": mode} if mode else {})}
        response = await api.post("/api/v1/resize", data=form(tagged, **fields))
        assert response.status == 202, await response.text()
        status = await wait_for_status(api, (await response.json())["job_id"])
        assert status["status"] == "completed", status
        outputs[mode] = pyvips.Image.new_from_buffer(await download(api, status["result"]["url"]), "")
    assert profile_of(outputs["keep"]) == PROFILE
    assert profile_of(outputs[None]) is None
    response = await api.post("/api/v1/resize", data=form(tagged, width=200, icc_profile="p3"))
    assert response.status == 422 and "icc_profile" in await response.text()
