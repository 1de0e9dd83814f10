"""Step 1: identify and open the input. Header first (limits), pixels only when asked.

Only the first page/frame is decoded (animated GIF/WebP become still images, see
docs/operations.md). ``thumbnail`` is the shrink-on-load path: libvips decodes JPEG at
1/2, 1/4 or 1/8 scale and WebP/HEIF at the target size directly.
"""

from dataclasses import dataclass, field
from typing import Any

import pyvips

from pixq.errors import ErrorCode, PixqError
from pixq.limits import Limits
from pixq.sniff import FAIL_ON, HEAD_BYTES, ImageInfo, apply_loader_policy, check_allowed, detect_format, inspect_header
from worker.imaging.metadata import input_metadata


@dataclass(frozen=True)
class Source:
    """The input bytes and what their header says: ``info`` for the engine's decisions,
    ``metadata`` for the job's ``result.input`` (worker.imaging.metadata), ``header`` the
    header-only image both came from (EXIF fields; no pixels decoded)."""

    data: bytes
    info: ImageInfo
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    header: pyvips.Image | None = field(default=None, compare=False, repr=False)


def open_source(data: bytes, limits: Limits) -> Source:
    """Check the input against the limits from its header alone; raise PixqError if refused."""
    if len(data) > limits.max_input_bytes:
        raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE,
                        f"input is {len(data)} bytes, over MAX_INPUT_BYTES={limits.max_input_bytes}")
    fmt = check_allowed(detect_format(data[:HEAD_BYTES]), limits)
    apply_loader_policy(limits)
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on=FAIL_ON)
    except pyvips.Error as exc:
        raise PixqError(ErrorCode.INVALID_IMAGE, f"cannot read image header: {vips_message(exc)}") from None
    info = inspect_header(header, fmt, limits)
    return Source(data, info, input_metadata(info, header), header)


def decode(source: Source, access: str = "sequential") -> pyvips.Image:
    """The full-size first page, not yet oriented or colour-converted (lazy)."""
    return pyvips.Image.new_from_buffer(source.data, "", access=access, fail_on=FAIL_ON)


def thumbnail(source: Source, width: int, height: int) -> pyvips.Image:
    """Exactly width x height (of the auto-oriented image), shrinking on load.

    libvips' thumbnail also auto-orients, premultiplies alpha and converts CMYK to sRGB;
    an embedded ICC profile is honoured by asking for an sRGB output profile, only when
    there is one (the transform costs ~2x on a plain JPEG). fail_on must go in the option
    string: the thumbnail operation's own fail_on argument does not reach the loader."""
    profile = {"output_profile": "srgb", "intent": "perceptual"} if source.info.has_profile else {}
    return pyvips.Image.thumbnail_buffer(
        source.data, width, height=height, size="force", option_string=f"fail_on={FAIL_ON}",
        **profile)


def vips_message(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = [line for line in lines[1:] if "unable to" not in line]
    return (detail or lines or ["unknown error"])[0][:200]
