"""The comparator the differential test trusts (pure logic on generated images, no sharp)."""

import pyvips

from tests.differential.compare import compare
from tests.differential.grid import compass_offset, plan


def png(image: pyvips.Image) -> bytes:
    return image.write_to_buffer(".png")


def ramp(width: int = 64, height: int = 32) -> pyvips.Image:
    """A horizontal sRGB ramp: a 1 px shift changes every pixel a little."""
    x = (pyvips.Image.xyz(width, height)[0] * (255 / (width - 1))).cast("uchar")
    return x.bandjoin([x, x]).copy(interpretation="srgb")


def test_identical_images_differ_by_nothing():
    diff = compare(png(ramp()), png(ramp()))
    assert (diff.same_size, diff.mad, diff.max) == (True, 0.0, 0.0)


def test_a_one_pixel_shift_shows():
    image = ramp(65)
    diff = compare(png(image.crop(0, 0, 64, 32)), png(image.crop(1, 0, 64, 32)))
    assert diff.mad > 3 and diff.max >= 3


def test_sizes_that_differ_give_no_pixel_figures():
    diff = compare(png(ramp(64, 32)), png(ramp(64, 33)))
    assert not diff.same_size and diff.mad is None


def test_grey_against_the_same_grey_in_three_bands():
    grey = ramp()[0].copy(interpretation="b-w")
    diff = compare(png(grey), png(ramp()))
    assert (diff.pixq.bands, diff.sharp.bands, diff.chroma, diff.mad) == (1, 3, 0.0, 0.0)


def test_grey_against_colour_reports_the_chroma():
    tinted = (ramp() + [0, 0, 20]).cast("uchar").copy(interpretation="srgb")  # blue +20 (clipped at 255)
    diff = compare(png(ramp()[0].copy(interpretation="b-w")), png(tinted))
    assert diff.chroma == 20


def test_the_colour_of_transparent_pixels_does_not_count():
    alpha = pyvips.Image.black(64, 32).cast("uchar")  # fully transparent
    red = (pyvips.Image.black(64, 32) + [255, 0, 0]).cast("uchar").bandjoin(alpha).copy(interpretation="srgb")
    blue = (pyvips.Image.black(64, 32) + [0, 0, 255]).cast("uchar").bandjoin(alpha).copy(interpretation="srgb")
    assert compare(png(red), png(blue)).mad == 0.0
    opaque = alpha + 255
    assert compare(png(red[:3].bandjoin(opaque)), png(blue[:3].bandjoin(opaque))).mad > 100


def test_sixteen_bits_compare_as_eight():
    wide = (ramp() * 257).cast("ushort").copy(interpretation="rgb16")
    diff = compare(png(ramp()), png(wide))
    assert diff.sharp.sixteen_bit and diff.max == 0.0


def test_the_documented_plan_and_centring():
    # docs/operations.md's table: 400x300 into 200x200
    assert plan((400, 300), {"width": 200, "height": 200, "fit": "cover"}).final == (200, 200)
    assert plan((400, 300), {"width": 200, "height": 200, "fit": "contain"}).scaled == (200, 150)
    assert plan((400, 300), {"width": 200, "fit": "fill"}).final == (200, 300)  # one side: the other kept
    assert plan((3840, 2160), {"width": 200}).final == (200, 113)  # 112.5 rounds half up
    assert compass_offset("centre", (267, 200), (200, 200)) == (33, 0)  # spare 67: 67 // 2
    assert plan((600, 450), {"width": 200, "height": 101, "fit": "cover"}).odd_centring("centre")
    assert not plan((600, 450), {"width": 200, "height": 101, "fit": "cover"}).odd_centring("north")
