"""Fixtures for the imaging tests: generated images (pyvips). Vendored image files: tests.fixtures."""

import pytest
import pyvips

from pixq.limits import TRUSTED_INPUT_FORMATS, Limits

RED, GREEN, BLUE, WHITE = [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]


def make_limits(**overrides) -> Limits:
    values = dict(max_input_bytes=50 * 1024 * 1024, max_input_pixels=50_000_000,
                  max_output_pixels=50_000_000, max_animation_frames=100,
                  allowed_input_formats=TRUSTED_INPUT_FORMATS)
    values.update(overrides)
    return Limits(**values)


def quadrants(width: int = 400, height: int = 300) -> pyvips.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right white."""
    half_w, half_h = width // 2, height // 2

    def block(colour, w, h):
        return (pyvips.Image.black(w, h) + colour).cast("uchar").copy(interpretation="srgb")

    top = block(RED, half_w, half_h).join(block(GREEN, width - half_w, half_h), "horizontal")
    bottom = block(BLUE, half_w, height - half_h).join(block(WHITE, width - half_w, height - half_h), "horizontal")
    return top.join(bottom, "vertical")


def gradient(width: int = 400, height: int = 300, axis: str = "x") -> pyvips.Image:
    """Grey ramp from 0 (left/top) to 255 (right/bottom), as sRGB."""
    xy = pyvips.Image.xyz(width, height)
    ramp = xy[0] * (255.0 / max(1, width - 1)) if axis == "x" else xy[1] * (255.0 / max(1, height - 1))
    return ramp.cast("uchar").bandjoin([ramp.cast("uchar"), ramp.cast("uchar")]).copy(interpretation="srgb")


def pixel(data: bytes, x: int, y: int) -> list[float]:
    return pyvips.Image.new_from_buffer(data, "")(x, y)


def decode(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


@pytest.fixture
def limits() -> Limits:
    return make_limits()
