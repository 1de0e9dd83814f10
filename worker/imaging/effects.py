"""Pipeline steps that keep the pixel grid semantics simple: rotate, flip, flop, blur,
sharpen, grayscale. Each takes and returns a pyvips.Image."""

import pyvips

from pixq.spec import BlurStep, RotateStep, SharpenStep
from worker.imaging import colour


def rotate(image: pyvips.Image, step: RotateStep) -> pyvips.Image:
    """Clockwise by a multiple of 90 degrees."""
    return image if step.angle == 0 else image.rot(f"d{step.angle}")


def flip(image: pyvips.Image) -> pyvips.Image:
    """Mirror top-bottom."""
    return image.flip("vertical")


def flop(image: pyvips.Image) -> pyvips.Image:
    """Mirror left-right."""
    return image.flip("horizontal")


def blur(image: pyvips.Image, step: BlurStep) -> pyvips.Image:
    return _keep_format(image, image.gaussblur(step.sigma))


def sharpen(image: pyvips.Image, step: SharpenStep) -> pyvips.Image:
    # vips_sharpen works in LabS and returns the input's interpretation.
    return _keep_format(image, image.sharpen(sigma=step.sigma))


def grayscale(image: pyvips.Image) -> pyvips.Image:
    """8-bit grey, alpha kept. An image that kept its input's RGB profile (``icc_profile:
    keep``) goes to sRGB first: that profile cannot describe a grey output."""
    return image if image.bands <= 2 else colour.kept_to_srgb(image).colourspace("b-w")


def _keep_format(before: pyvips.Image, after: pyvips.Image) -> pyvips.Image:
    return after if after.format == before.format else after.cast(before.format)
