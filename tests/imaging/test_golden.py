"""Golden behaviour of worker.imaging.process on generated images and the EXIF fixtures."""

import threading

import pytest
import pyvips

from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobType
from pixq.spec import to_pipeline
from tests.fixtures import fixture
from tests.imaging.conftest import BLUE, GREEN, RED, WHITE, decode, gradient, make_limits, pixel, quadrants
from worker.imaging import process
from worker.imaging.pipeline import classify


def run(image_or_bytes, job_type="resize", limits=None, cancel=None, **params):
    data = image_or_bytes if isinstance(image_or_bytes, bytes) else image_or_bytes.write_to_buffer(".png")
    outputs = process(data, to_pipeline(JobType(job_type), params), limits or make_limits(), cancel)
    return outputs


def one(*args, **kwargs):
    outputs = run(*args, **kwargs)
    assert len(outputs) == 1
    return outputs[0]


def close(actual, expected, tolerance=12):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


# --- fit modes ---------------------------------------------------------------------

@pytest.mark.parametrize("fit, size", [
    ("inside", (200, 150)), ("outside", (267, 200)), ("cover", (200, 200)),
    ("contain", (200, 200)), ("fill", (200, 200)),
])
def test_fit_output_size(fit, size):
    out = one(quadrants(), width=200, height=200, fit=fit)
    assert (out.width, out.height) == size
    assert (decode(out.data).width, decode(out.data).height) == size
    assert out.format == "png"


def test_default_fit_is_inside_and_never_enlarges():
    out = one(quadrants(100, 80), width=400, height=400)
    assert (out.width, out.height) == (100, 80)
    out = one(quadrants(100, 80), width=400, height=400, enlarge=True)
    assert (out.width, out.height) == (400, 320)


def test_contain_pads_with_background():
    out = one(quadrants(), width=200, height=200, fit="contain", background="#ff00ff", format="png")
    assert close(pixel(out.data, 100, 5), [255, 0, 255])  # top bar
    assert close(pixel(out.data, 50, 60), RED)
    assert close(pixel(out.data, 150, 140), WHITE)


def test_contain_transparent_background_adds_alpha():
    out = one(quadrants(), width=200, height=200, fit="contain", background="#00000000", format="png")
    image = decode(out.data)
    assert image.bands == 4 and image(100, 5)[3] == 0 and image(100, 100)[3] == 255


def test_fill_stretches_quadrants():
    out = one(quadrants(), width=100, height=300, fit="fill")
    assert close(pixel(out.data, 25, 70), RED) and close(pixel(out.data, 75, 230), WHITE)


# --- gravity ------------------------------------------------------------------------

@pytest.mark.parametrize("gravity, compare", [
    ("west", lambda m, c: m < c), ("east", lambda m, c: m > c), ("centre", lambda m, c: abs(m - c) < 3),
])
def test_cover_gravity_horizontal(gravity, compare):
    centre = decode(one(gradient(400, 200), width=200, height=200, fit="cover").data).avg()
    mean = decode(one(gradient(400, 200), width=200, height=200, fit="cover", gravity=gravity).data).avg()
    assert compare(mean, centre)
    assert abs(centre - 127.5) < 3


@pytest.mark.parametrize("gravity, low", [("north", True), ("south", False), ("northwest", True),
                                          ("southeast", False)])
def test_cover_gravity_vertical(gravity, low):
    mean = decode(one(gradient(200, 400, axis="y"), width=200, height=200, fit="cover",
                      gravity=gravity).data).avg()
    assert (mean < 70) if low else (mean > 185)


@pytest.mark.parametrize("gravity", ["attention", "entropy"])
def test_cover_smart_gravity_finds_detail(gravity):
    plain = (pyvips.Image.black(600, 200) + [128, 128, 128]).cast("uchar")
    detail = (pyvips.Image.gaussnoise(150, 150, sigma=80, mean=128) * [1.5, 0.4, 0.3]).cast("uchar")
    image = plain.insert(detail, 420, 25).copy(interpretation="srgb")
    out = decode(one(image, width=200, height=200, fit="cover", gravity=gravity).data)
    assert (out.width, out.height) == (200, 200)
    assert out.deviate() > 30  # the noisy patch (right side) is in the crop; centre would be flat


# --- crop ---------------------------------------------------------------------------

@pytest.mark.parametrize("x, y, colour", [(0, 0, RED), (250, 0, GREEN), (0, 200, BLUE), (250, 200, WHITE)])
def test_crop_box_picks_quadrant(x, y, colour):
    out = one(quadrants(), "crop", x=x, y=y, width=100, height=80)
    assert (out.width, out.height) == (100, 80)
    assert close(decode(out.data).stats()(4, 1)[:1] + decode(out.data).stats()(4, 2)[:1]
                 + decode(out.data).stats()(4, 3)[:1], colour, 1)


@pytest.mark.parametrize("gravity, colour", [("northwest", RED), ("northeast", GREEN),
                                             ("southwest", BLUE), ("southeast", WHITE)])
def test_crop_gravity(gravity, colour):
    out = one(quadrants(), "crop", width=100, height=100, gravity=gravity)
    assert close(pixel(out.data, 50, 50), colour, 1)


def test_crop_gravity_larger_than_image_is_clamped():
    out = one(quadrants(), "crop", width=1000, height=100)
    assert (out.width, out.height) == (400, 100)


@pytest.mark.parametrize("box", [dict(x=350, y=0, width=100, height=10), dict(x=0, y=299, width=1, height=2)])
def test_crop_out_of_bounds(box):
    with pytest.raises(PixqError) as info:
        run(quadrants(), "crop", **box)
    assert info.value.code == ErrorCode.CROP_OUT_OF_BOUNDS


# --- formats ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, loader", [("jpeg", "jpegload"), ("png", "pngload"), ("webp", "webpload"),
                                         ("avif", "heifload"), ("gif", "gifload"), ("tiff", "tiffload")])
def test_output_formats(fmt, loader):
    out = one(quadrants(), width=100, format=fmt)
    image = decode(out.data)
    assert out.format == fmt and image.get("vips-loader").startswith(loader)
    assert (image.width, image.height) == (100, 75)
    assert close(image(10, 10), RED, 40) and close(image(90, 70), WHITE, 40)


@pytest.mark.parametrize("source_fmt, expected", [(".jpg", "jpeg"), (".webp", "webp"), (".gif", "gif"),
                                                  (".tif", "tiff"), (".png", "png")])
def test_same_format_keeps_input(source_fmt, expected):
    out = one(quadrants().write_to_buffer(source_fmt), width=50)
    assert out.format == expected and out.extension == {"jpeg": "jpg", "tiff": "tif"}.get(expected, expected)


def test_same_format_rule_for_unwritable_input():
    from worker.imaging.encode import output_format
    assert output_format("same", "heif", has_alpha=False) == "jpeg"
    assert output_format("same", "svg", has_alpha=True) == "png"
    assert output_format("webp", "png", has_alpha=True) == "webp"


def test_quality_and_progressive():
    small = one(gradient(), width=300, format="jpeg", quality=10)
    large = one(gradient(), width=300, format="jpeg", quality=95)
    assert len(small.data) < len(large.data)
    progressive = one(quadrants(), width=100, format="jpeg", progressive=True)
    assert b"\xff\xc2" in progressive.data and b"\xff\xc2" not in one(quadrants(), width=100, format="jpeg").data
    interlaced = one(quadrants(), width=100, format="png", progressive=True)
    assert decode(interlaced.data).get("interlaced") == 1


def test_webp_lossless_is_exact():
    out = one(quadrants(), "crop", x=0, y=0, width=400, height=300, format="webp", lossless=True)
    assert (decode(out.data).extract_band(0, n=3) - quadrants()).abs().max() == 0


# --- alpha, depth, grey, colour -----------------------------------------------------

def _alpha_image():
    rgb = quadrants()
    alpha = (pyvips.Image.black(400, 300) + 255).cast("uchar").draw_rect(0, 0, 0, 200, 150, fill=True)
    return rgb.bandjoin(alpha)


def test_alpha_kept_in_png_and_webp():
    for fmt in ("png", "webp"):
        image = decode(one(_alpha_image(), width=200, format=fmt).data)
        assert image.hasalpha() and image(10, 10)[3] == 0 and image(190, 140)[3] == 255


def test_alpha_flattened_onto_background_for_jpeg():
    out = one(_alpha_image(), width=200, format="jpeg", background="#0000ff")
    image = decode(out.data)
    assert image.bands == 3 and close(image(10, 10), BLUE, 20) and close(image(190, 140), WHITE, 20)


def test_sixteen_bit_and_grey_inputs():
    deep = (gradient().cast("ushort") * 257).copy(interpretation="rgb16")
    out = decode(one(deep.write_to_buffer(".png"), width=100).data)
    assert out.format == "uchar" and out.bands == 3 and 100 < out.avg() < 155
    grey = gradient()[0].copy(interpretation="b-w")
    out = decode(one(grey.write_to_buffer(".jpg"), width=100).data)
    assert out.bands == 1 and 100 < out.avg() < 155


def test_cmyk_becomes_srgb():
    for name in ("Channel_digital_image_CMYK_color.jpg", "Channel_digital_image_CMYK_color_no_profile.jpg"):
        data = fixture(f"sharp/{name}").read_bytes()
        for job, params in (("resize", {"width": 120}), ("crop", {"x": 0, "y": 0, "width": 50, "height": 50})):
            image = decode(one(data, job, **params).data)
            assert image.bands == 3 and image.interpretation == "srgb"


def test_icc_profile_honoured():
    data = fixture("sharp/prophoto.png").read_bytes()
    expected = decode(data).icc_transform("srgb", embedded=True).avg()
    assert abs(decode(one(data, width=100).data).avg() - expected) < 4


def test_metadata_stripped_by_default():
    data = fixture("sharp/Landscape_1.jpg").read_bytes()
    assert decode(data).get_typeof("exif-data")
    assert not decode(one(data, width=100).data).get_typeof("exif-data")
    assert decode(one(data, width=100, strip=False).data).get_typeof("exif-data")


# --- EXIF orientation ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
@pytest.mark.parametrize("job, params", [("resize", {"width": 120}),
                                         ("crop", {"x": 20, "y": 30, "width": 200, "height": 150})])
def test_exif_orientations_match_upright(kind, job, params):
    reference = decode(one(fixture(f"sharp/{kind}_1.jpg").read_bytes(), job, **params).data)
    for n in range(2, 9):
        image = decode(one(fixture(f"sharp/{kind}_{n}.jpg").read_bytes(), job, **params).data)
        assert (image.width, image.height) == (reference.width, reference.height), n
        assert (image - reference).abs().avg() < 12, n


# --- pipelines -----------------------------------------------------------------------

def pipeline(image, steps, variants=None, **kwargs):
    return run(image, "pipeline", steps=steps, variants=variants or [{"name": "out", "format": "png"}], **kwargs)


def test_rotate_flip_flop():
    rotated = pipeline(quadrants(), [{"op": "rotate", "angle": 90}])[0]
    assert (rotated.width, rotated.height) == (300, 400)
    assert close(pixel(rotated.data, 290, 10), RED, 1)  # top-left went to top-right
    flipped = pipeline(quadrants(), [{"op": "flip"}])[0]
    assert close(pixel(flipped.data, 10, 290), RED, 1)
    flopped = pipeline(quadrants(), [{"op": "flop"}])[0]
    assert close(pixel(flopped.data, 390, 10), RED, 1)


def test_blur_sharpen_grayscale():
    blurred = decode(pipeline(quadrants(), [{"op": "blur", "sigma": 10}])[0].data)
    assert not close(blurred(200, 75), RED, 30) and close(blurred(20, 20), RED, 2)
    sharpened = pipeline(gradient(), [{"op": "sharpen", "sigma": 1.5}])[0]
    assert decode(sharpened.data).bands == 3
    grey = decode(pipeline(quadrants(), [{"op": "grayscale"}])[0].data)
    assert grey.bands == 1


def test_steps_then_variants():
    outputs = pipeline(
        quadrants(800, 600),
        [{"op": "crop", "x": 0, "y": 0, "width": 400, "height": 300}, {"op": "resize", "width": 200}],
        variants=[{"name": "big", "format": "png"},
                  {"name": "thumb", "width": 50, "height": 50, "fit": "cover", "format": "jpeg"},
                  {"name": "webp", "width": 100, "format": "webp"}])
    assert [(o.name, o.width, o.height, o.format) for o in outputs] == [
        ("big", 200, 150, "png"), ("thumb", 50, 50, "jpeg"), ("webp", 100, 75, "webp")]
    assert close(pixel(outputs[0].data, 100, 75), RED, 1)


def test_variants_without_steps_share_one_decode():
    outputs = run(quadrants(1600, 1200).write_to_buffer(".jpg"), "pipeline", variants=[
        {"name": "a", "width": 800}, {"name": "b", "width": 100, "height": 100, "fit": "cover"},
        {"name": "c", "width": 3200, "enlarge": True}])
    assert [(o.width, o.height) for o in outputs] == [(800, 600), (100, 100), (3200, 2400)]
    assert close(pixel(outputs[0].data, 10, 10), RED, 20) and close(pixel(outputs[2].data, 3190, 2390), WHITE, 20)


# --- limits, errors, cancellation -----------------------------------------------------

@pytest.mark.parametrize("limits, code", [
    (make_limits(max_input_pixels=1000), ErrorCode.IMAGE_TOO_LARGE),
    (make_limits(max_input_bytes=100), ErrorCode.PAYLOAD_TOO_LARGE),
    (make_limits(max_output_pixels=100), ErrorCode.OUTPUT_TOO_LARGE),
    (make_limits(allowed_input_formats=frozenset({"jpeg"})), ErrorCode.UNSUPPORTED_FORMAT),
])
def test_limits(limits, code):
    with pytest.raises(PixqError) as info:
        run(quadrants(), limits=limits, width=200)
    assert info.value.code == code


def test_enlarge_over_output_limit():
    with pytest.raises(PixqError) as info:
        run(quadrants(40, 30), width=16000, enlarge=True, limits=make_limits(max_output_pixels=10_000_000))
    assert info.value.code == ErrorCode.OUTPUT_TOO_LARGE


def test_too_many_frames():
    data = fixture("sharp/animated-loop-3.gif").read_bytes()
    out = one(data, width=50)
    assert out.format == "gif" and decode(out.data).get("n-pages") == 1  # first frame only
    with pytest.raises(PixqError) as info:
        run(data, width=50, limits=make_limits(max_animation_frames=2))
    assert info.value.code == ErrorCode.TOO_MANY_FRAMES


@pytest.mark.parametrize("data, code", [
    (b"not an image at all", ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (b"", ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (b"BM" + b"\0" * 100, ErrorCode.UNSUPPORTED_FORMAT),
    (b"\xff\xd8\xff\xe0" + b"\0" * 50, ErrorCode.INVALID_IMAGE),
])
def test_bad_input(data, code):
    with pytest.raises(PixqError) as info:
        run(data, width=10)
    assert info.value.code == code


def test_truncated_fails_with_invalid_image():
    for name in ("truncated.jpg", "truncated.png"):
        with pytest.raises(PixqError) as info:
            run(fixture(f"sharp/{name}").read_bytes(), width=100)
        assert info.value.code == ErrorCode.INVALID_IMAGE, name


@pytest.mark.parametrize("name, code", [("sharp/truncated.jpg", ErrorCode.INVALID_IMAGE),
                                        ("sharp/truncated.png", ErrorCode.INVALID_IMAGE)])
def test_a_save_failure_whose_message_another_thread_took_still_blames_the_input(name, code):
    """libvips' error buffer is process-wide: a job failing at the same time on another
    thread can take the decoder's message, leaving only "unable to call ...Save...". The
    input is then decoded once more to decide whose fault it was."""
    bare = pyvips.Error("unable to call VipsForeignSaveJpegTarget", detail="")
    assert classify(bare, fixture(name).read_bytes()).code == code
    assert classify(bare, quadrants().write_to_buffer(".png")).code == ErrorCode.PROCESSING_FAILED


def test_cancel_before_start():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PixqError) as info:
        run(quadrants(), width=10, cancel=cancel)
    assert info.value.code == ErrorCode.TIMEOUT


class CancelDuringEval(threading.Event):
    """Reports 'set' from the first libvips eval callback on (checks before it see 'clear')."""

    def __init__(self, checks_before_eval: int):
        super().__init__()
        self.calls = 0
        self.checks_before_eval = checks_before_eval

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls > self.checks_before_eval


def test_cancel_kills_libvips_work():
    # 2 Guard.check calls precede the encode (after load, before the variant): the third
    # is_set comes from libvips' eval signal during encoding, which must kill the work.
    big = pyvips.Image.gaussnoise(3000, 3000).cast("uchar").write_to_buffer(".png", compression=1)
    cancel = CancelDuringEval(checks_before_eval=3)
    with pytest.raises(PixqError) as info:
        run(big, "pipeline", cancel=cancel, steps=[{"op": "blur", "sigma": 30}],
            variants=[{"name": "a", "format": "png"}])
    assert info.value.code == ErrorCode.TIMEOUT
    assert cancel.calls > 3


def test_cancellation_set_from_another_thread_kills_libvips_work():
    """The worker's path: JobRunner sets a Cancellation from the event loop on JOB_TIMEOUT;
    the registered image is killed mid-encode and process() raises TIMEOUT promptly."""
    import time

    from worker.imaging import Cancellation

    big = pyvips.Image.gaussnoise(3000, 3000).cast("uchar").write_to_buffer(".png", compression=1)
    spec = dict(steps=[{"op": "blur", "sigma": 30}], variants=[{"name": "a", "format": "png"}])
    started = time.perf_counter()
    run(big, "pipeline", **spec)
    uncancelled = time.perf_counter() - started

    cancel = Cancellation()
    timer = threading.Timer(uncancelled / 10, cancel.set)
    timer.start()
    started = time.perf_counter()
    with pytest.raises(PixqError) as info:
        run(big, "pipeline", cancel=cancel, **spec)
    assert info.value.code == ErrorCode.TIMEOUT
    assert time.perf_counter() - started < uncancelled * 0.75  # killed, not run to the end


def test_cancellation_holds_no_image_once_the_pipeline_returns():
    """JobRunner's Cancellation outlives process_job: it goes with the attempt, on the event
    loop. Holding the pipeline's images until then made libvips free the whole pipeline on the
    loop's thread (0.5 ms of loop CPU per photo job, issue 16); process_job releases them in
    its own thread, on success and on failure alike."""
    from worker.imaging import Cancellation

    registered: list[int] = []

    class Counting(Cancellation):
        def register(self, image: pyvips.Image) -> None:
            registered.append(1)
            super().register(image)

    cancel = Counting()
    run(pyvips.Image.black(64, 48, bands=3), "pipeline", cancel=cancel,
        variants=[{"name": "a", "format": "png"}, {"name": "b", "format": "jpeg"}])
    assert len(registered) >= 3  # the shared copy and both encodes were watched
    assert cancel._images == []
    registered.clear()
    with pytest.raises(PixqError):
        run(b"\xff\xd8\xff" + bytes(100), "pipeline", cancel=cancel, variants=[{"name": "a", "format": "png"}])
    assert cancel._images == []


# --- turns before a resize (issue 16: they run on the shrink-on-load image) -------------

@pytest.mark.parametrize("turns, left, right", [
    ([{"op": "rotate", "angle": 90}], BLUE, RED),           # left column turns into the top row
    ([{"op": "rotate", "angle": 270}], GREEN, WHITE),
    ([{"op": "rotate", "angle": 90}, {"op": "flop"}], RED, BLUE),
    ([{"op": "flip"}, {"op": "rotate", "angle": 90}], RED, BLUE),
])
def test_turns_then_cover_resize_place_the_quadrants(turns, left, right):
    out = pipeline(quadrants(), [*turns, {"op": "resize", "width": 150, "height": 100, "fit": "cover",
                                          "gravity": "north"}])[0]
    assert (out.width, out.height) == (150, 100)  # 400x300 turned to 300x400, halved, top 100 rows
    assert close(pixel(out.data, 10, 50), left, 2) and close(pixel(out.data, 140, 50), right, 2)


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
def test_exif_orientations_with_turns_before_a_resize_match_upright(kind):
    steps = [{"op": "rotate", "angle": 90}, {"op": "flip"}, {"op": "resize", "width": 100, "height": 100,
                                                              "fit": "cover"}]
    reference = decode(pipeline(fixture(f"sharp/{kind}_1.jpg").read_bytes(), steps)[0].data)
    assert (reference.width, reference.height) == (100, 100)
    for n in range(2, 9):
        image = decode(pipeline(fixture(f"sharp/{kind}_{n}.jpg").read_bytes(), steps)[0].data)
        assert (image.width, image.height) == (100, 100), n
        assert (image - reference).abs().avg() < 12, n
