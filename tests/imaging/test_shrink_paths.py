"""Shrink-on-load where the format allows it (issue 16): rotate/flip/flop steps before a resize
run after the shrink-on-load decode, not on the full-size image, with the geometry the steps
give in their written order."""

import pytest
import pyvips

from pixq.spec import PipelineSpec, ResizeOptions
from tests.fixtures import fixture
from tests.imaging.conftest import make_limits
from worker.imaging import process
from worker.imaging.geometry import plan_resize

PHOTO = fixture("sharp/2569067123_aca715a2ee_o.jpg")  # 2725x2225, orientation 1


def run(data: bytes, steps: list[dict], fmt: str = "png") -> pyvips.Image:
    spec = PipelineSpec(steps=steps, variants=[{"name": "out", "format": fmt}])
    return pyvips.Image.new_from_buffer(process(data, spec, make_limits())[0].data, "")


def mad(a: pyvips.Image, b: pyvips.Image) -> float:
    return (a.cast("float") - b.cast("float")).abs().avg()


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_turns_before_a_resize_run_on_the_shrunk_image(suffix):
    """[rotate 90, flop, resize] gives exactly what [resize (the box turned back), rotate 90,
    flop] gives: the same shrink-on-load decode, then the turns. A full-size decode, rotated
    then resized, would differ (other shrink factor, other rounding)."""
    data = pyvips.Image.new_from_file(str(PHOTO)).write_to_buffer(suffix, Q=95)
    turned_first = run(data, [{"op": "rotate", "angle": 90}, {"op": "flop"},
                              {"op": "resize", "width": 300, "height": 400}])
    resized_first = run(data, [{"op": "resize", "width": 400, "height": 300},
                               {"op": "rotate", "angle": 90}, {"op": "flop"}])
    assert (turned_first.width, turned_first.height) == (resized_first.width, resized_first.height) == (300, 367)
    assert mad(turned_first, resized_first) == 0.0


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_cover_crop_after_turns_places_the_box_in_the_turned_image(angle):
    """The box is planned and placed in the turned image: exactly pixq's own shrink-on-load
    resize of the unturned photo to the scaled size, turned, then cut at the north edge; and
    within the fast shrink-on-load's tolerance (docs/operations.md: MAD 1.9 at 256 px) of the
    slow path done by hand (full decode, rotate, resize, crop)."""
    data = PHOTO.read_bytes()
    out = run(data, [{"op": "rotate", "angle": angle},
                     {"op": "resize", "width": 200, "height": 120, "fit": "cover", "gravity": "north"}])
    assert (out.width, out.height) == (200, 120)
    full = pyvips.Image.new_from_buffer(data, "").rot(f"d{angle}")
    plan = plan_resize(full.width, full.height, ResizeOptions(width=200, height=120, fit="cover"))
    width, height = plan.scaled if angle == 180 else plan.scaled[::-1]
    shrunk = run(data, [{"op": "resize", "width": width, "height": height, "fit": "fill"}]).rot(f"d{angle}")
    assert mad(out, shrunk.extract_area((shrunk.width - 200) // 2, 0, 200, 120)) == 0.0
    slow = full.thumbnail_image(plan.scaled[0], height=plan.scaled[1], size="force")
    assert mad(out, slow.extract_area((slow.width - 200) // 2, 0, 200, 120)) < 2.5


def test_a_step_that_does_not_commute_keeps_the_full_size_decode():
    """blur then resize is not resize then blur: the order written is the order run."""
    data = PHOTO.read_bytes()
    blurred_first = run(data, [{"op": "blur", "sigma": 3}, {"op": "resize", "width": 300}])
    resized_first = run(data, [{"op": "resize", "width": 300}, {"op": "blur", "sigma": 3}])
    assert blurred_first.width == resized_first.width == 300
    assert mad(blurred_first, resized_first) > 1.0


@pytest.mark.parametrize("turns", [[{"op": "rotate", "angle": 90}], [{"op": "rotate", "angle": 180}],
                                   [{"op": "flip"}], [{"op": "flop"}, {"op": "rotate", "angle": 270}]])
def test_turns_that_read_rows_out_of_order_work_on_a_sequential_jpeg(turns):
    """A rotate or flip on the shrunk image reads rows out of order, which a sequential JPEG
    load refuses ("out of order read"): a large output of the 6 MP photo shows it."""
    out = run(PHOTO.read_bytes(), [*turns, {"op": "resize", "width": 1500, "height": 1500}], fmt="jpeg")
    assert max(out.width, out.height) == 1500
