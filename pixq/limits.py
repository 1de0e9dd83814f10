"""Limits that protect workers and the API from hostile input; shared by submit-time sniffing and processing."""

from dataclasses import dataclass

from pixq import formats
from pixq.settings import Settings

TRUSTED_INPUT_FORMATS = formats.TRUSTED_INPUT
"""Input formats decoded by default (pixq.formats). SVG, PDF and the like run large parsers on
untrusted input and are accepted only with ENABLE_UNTRUSTED_LOADERS=true."""
UNTRUSTED_INPUT_FORMATS = formats.UNTRUSTED_INPUT
ANIMATED_FORMATS = formats.ANIMATED
"""Formats whose frame count is held to MAX_ANIMATION_FRAMES (pixq renders the first frame
only, but a header that declares thousands of frames is refused before it is scanned)."""


@dataclass(frozen=True)
class Limits:
    max_input_bytes: int
    max_input_pixels: int
    max_output_pixels: int
    max_animation_frames: int
    allowed_input_formats: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        allowed = TRUSTED_INPUT_FORMATS
        if settings.enable_untrusted_loaders:
            allowed = allowed | UNTRUSTED_INPUT_FORMATS
        return cls(
            max_input_bytes=settings.max_input_bytes,
            max_input_pixels=settings.max_input_pixels,
            max_output_pixels=settings.max_output_pixels,
            max_animation_frames=settings.max_animation_frames,
            allowed_input_formats=allowed,
        )
