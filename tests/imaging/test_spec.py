"""Spec validation edge cases (the API validates with these at submit)."""

import pytest

from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobType
from pixq.spec import MAX_DIMENSION, to_pipeline, validate_parameters


def invalid(job_type, params):
    with pytest.raises(PixqError) as info:
        validate_parameters(JobType(job_type), params)
    assert info.value.code == ErrorCode.INVALID_PARAMETERS
    return info.value.message


@pytest.mark.parametrize("params", [
    {}, {"width": 0}, {"width": MAX_DIMENSION + 1}, {"width": 10, "fit": "stretch"},
    {"width": 10, "gravity": "middle"}, {"width": 10, "quality": 0}, {"width": 10, "quality": 101},
    {"width": 10, "format": "bmp"}, {"width": 10, "background": "red"}, {"width": 10, "colour": 1},
    {"width": 10, "chroma_subsampling": "4:2:2"},
])
def test_resize_rejects(params):
    invalid("resize", params)


def test_resize_defaults_and_aliases():
    spec = to_pipeline(JobType.RESIZE, {"width": 10, "format": "JPG", "gravity": "center", "background": "000000"})
    variant = spec.variants[0]
    assert (variant.fit, variant.format, variant.gravity, variant.background) == ("inside", "jpeg", "centre", "#000000")
    assert variant.strip and not variant.enlarge and spec.steps == []
    assert to_pipeline(JobType.RESIZE, {"width": 10, "fit": "cover"}).variants[0].resize.fit == "inside"
    assert to_pipeline(JobType.RESIZE, {"width": 10, "fit": "fill"}).variants[0].resize.fit == "fill"  # as sharp


def test_chroma_subsampling_default_stays_out_of_the_message():
    """A spec at the default reads exactly as before (a previous worker forbids unknown keys)."""
    default = to_pipeline(JobType.RESIZE, {"width": 10})
    assert default.variants[0].chroma_subsampling == "4:4:4"
    assert "chroma_subsampling" not in default.model_dump_json()
    chosen = to_pipeline(JobType.RESIZE, {"width": 10, "format": "avif", "chroma_subsampling": "4:2:0"})
    assert '"chroma_subsampling":"4:2:0"' in chosen.model_dump_json()
    assert type(chosen).model_validate_json(chosen.model_dump_json()) == chosen


@pytest.mark.parametrize("params", [
    {"x": 1, "width": 10, "height": 10}, {"width": 10}, {"x": -1, "y": 0, "width": 1, "height": 1},
    {"width": 10, "height": 10, "gravity": "up"},
])
def test_crop_rejects(params):
    invalid("crop", params)


def test_crop_becomes_crop_step():
    spec = to_pipeline(JobType.CROP, {"x": 1, "y": 2, "width": 3, "height": 4, "format": "png"})
    assert spec.steps[0].op == "crop" and spec.steps[0].is_box and spec.variants[0].format == "png"


@pytest.mark.parametrize("params", [
    {"steps": [{"op": "flip"}] * 11},
    {"variants": [{"name": f"v{i}"} for i in range(11)]},
    {"variants": []},
    {"variants": [{"name": "a"}, {"name": "a"}]},
    {"variants": [{"name": "../etc"}]},
    {"steps": [{"op": "rotate", "angle": 45}]},
    {"steps": [{"op": "blur", "sigma": 0}]},
    {"steps": [{"op": "explode"}]},
    {"steps": [{"op": "resize"}]},
])
def test_pipeline_rejects(params):
    invalid("pipeline", params)


def test_pipeline_limits_accept_ten():
    spec = to_pipeline(JobType.PIPELINE, {"steps": [{"op": "flop"}] * 10,
                                           "variants": [{"name": f"v{i}", "width": 10} for i in range(10)]})
    assert len(spec.steps) == 10 and len(spec.variants) == 10
