"""Step 1: identify and open the input. Header first (limits), pixels only when asked.

Only the first page/frame is decoded (animated GIF/WebP become still images, see
docs/operations.md). ``thumbnail`` is the shrink-on-load path: libvips decodes JPEG at
1/2, 1/4 or 1/8 scale and WebP/HEIF at the target size directly.

JPEG is always read by ``jpegload``, never ``uhdrload``: an UltraHDR (gain-map) JPEG is then
its SDR base image, the same pixels, ~1/3 faster to load (pixq writes no HDR output; if it
ever does, that output is the one case for uhdrload). And pixq picks the JPEG shrink-on-load
factor itself, like sharp's fast mode (``jpeg_shrink``), then lets libvips' thumbnail_image
finish: the same operation libvips' thumbnail_buffer runs after its own, more conservative,
choice.

Every load reads the input bytes in place, through a memory ``pyvips.Source``
(``read_header``, ``read_jpeg``, ``read_thumbnail``), never through the ``*_buffer`` loaders:
pyvips hands those a g_malloc'd copy of the bytes on every call, so a job held two or
three copies of its input while it ran (the header image keeps its copy alive), each one
fresh pages to fault in (a 29 MP JPEG: ~1,800 minor faults per fit-512 job, ~40 after).
Measured in docs/operations.md ("Worker memory").
"""

from dataclasses import dataclass, field
from typing import Any

import pyvips

from pixq.errors import ErrorCode, PixqError
from pixq.limits import Limits
from pixq.sniff import FAIL_ON, HEAD_BYTES, ImageInfo, apply_loader_policy, check_allowed, detect_format, inspect_header
from worker.imaging import colour
from worker.imaging.metadata import input_metadata

FAST_SHRINK_ON_LOAD = True
"""Choose the JPEG shrink-on-load factor like sharp's fast mode (``jpeg_shrink``). Measured
quality cost and speed: docs/operations.md ("Shrink-on-load"). A module constant, not a
setting: the golden and differential tests hold with it, and bench/ flips it to compare."""


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
        # A JPEG's header through jpegload too: libvips' own pick for an UltraHDR file is
        # uhdrload, whose header read alone took 6.4 ms on gain-map.jpg against 0.2 ms.
        read = read_jpeg if fmt == "jpeg" else read_header
        header = read(data, access="sequential", fail_on=FAIL_ON)
    except pyvips.Error as exc:
        raise PixqError(ErrorCode.INVALID_IMAGE, f"cannot read image header: {vips_message(exc)}") from None
    info = inspect_header(header, fmt, limits)
    return Source(data, info, input_metadata(info, header), header)


def decode(source: Source, access: str = "sequential") -> pyvips.Image:
    """The full-size first page, not yet oriented or colour-converted (lazy)."""
    if source.info.format == "jpeg":
        return read_jpeg(source.data, access=access, fail_on=FAIL_ON)
    return read_header(source.data, access=access, fail_on=FAIL_ON)


def header_of(source: Source) -> pyvips.Image:
    """The image whose header the colour decision reads: the one loaded for the limits, or a
    lazy decode (no pixels are read for the decision)."""
    return source.header if source.header is not None else decode(source)


def thumbnail(source: Source, width: int, height: int, keep_profile: bool = False) -> pyvips.Image:
    """Exactly width x height (of the auto-oriented image), shrinking on load.

    libvips' thumbnail also auto-orients and premultiplies alpha; the colour conversion is
    colour.decide's (the decode path applies the same one; without colour options libvips'
    thumbnail transforms nothing and keeps the profile attached: ``keep_profile``)."""
    header = header_of(source)
    conversion = colour.decide(header, keep_profile)
    # CMYK, and grey with a profile, convert before the resize, as on the decode path (and in
    # sharp): resizing the ink values instead differs by MAD ~2 (pil_sample_cmyk.jpg halved),
    # and a grey profile's curve applied after an alpha-weighted shrink by MAD ~1.9.
    convert_first = conversion.input_profile == "cmyk" or (conversion.grey and conversion.transforms)
    # A 16-bit input is narrowed to 8 bits first, by colour.to_srgb's rule, as on the decode
    # path: libvips' thumbnail would narrow it inside, its own way (÷ 257), and the resize and
    # crop of one image differed by a level. Such inputs (PNG, TIFF) have no shrink-on-load to lose.
    wide = header.format == "ushort"
    if source.info.format != "jpeg" and not convert_first and not wide:
        return read_thumbnail(source.data, width, height=height, size="force", **conversion.thumbnail_options())
    if source.info.format == "jpeg":
        loaded = read_jpeg(source.data, shrink=jpeg_shrink(source.info, width, height), access="sequential",
                           fail_on=FAIL_ON)
    else:
        loaded = decode(source)
    if wide:
        return colour.to_srgb(loaded, keep_profile=keep_profile).thumbnail_image(width, height=height, size="force")
    if convert_first:
        return colour.icc_to_srgb(loaded, conversion).thumbnail_image(width, height=height, size="force")
    return loaded.thumbnail_image(width, height=height, size="force", **conversion.thumbnail_options())


def read_header(data: bytes, **options: Any) -> pyvips.Image:
    """The input through the loader libvips picks for it (pixels decoded only when asked)."""
    return pyvips.Image.new_from_source(pyvips.Source.new_from_memory(data), "", **options)


def read_jpeg(data: bytes, **options: Any) -> pyvips.Image:
    """A JPEG through ``jpegload`` (never ``uhdrload``: see the module docstring)."""
    source = pyvips.Source.new_from_memory(data)
    return _holding(pyvips.Image.jpegload_source(source, **options), source)


def read_thumbnail(data: bytes, width: int, **options: Any) -> pyvips.Image:
    """libvips' thumbnail of the input (shrink-on-load where the loader has one). fail_on goes
    in the option string: the thumbnail operation's own fail_on does not reach the loader."""
    source = pyvips.Source.new_from_memory(data)
    image = pyvips.Image.thumbnail_source(source, width, option_string=f"fail_on={FAIL_ON}", **options)
    return _holding(image, source)


def _holding(image: pyvips.Image, source: pyvips.Source) -> pyvips.Image:
    """Keep ``source`` (and the bytes it reads in place) alive as long as ``image`` and every
    image made from it: pyvips' own new_from_source does this, its generated ``*_source``
    operations do not."""
    image._references.append(source)
    return image


def jpeg_shrink(info: ImageInfo, width: int, height: int, fast: bool | None = None) -> int:
    """JPEG shrink-on-load factor (1, 2, 4, 8) for a width x height (oriented) target.

    libvips' thumbnail leaves at least 2x for its Lanczos reduce (shrink >= 4 to load at
    1/2); sharp's fast mode, the default there, loads at the largest factor that keeps the
    decoded image at or above the target, one step less when the shrink is exactly that
    factor's integer part (libjpeg rounding). E.g. 2725x2225 to 512: shrink 5.3, libvips
    1/2, fast 1/4."""
    fast = FAST_SHRINK_ON_LOAD if fast is None else fast
    target_w, target_h = (height, width) if info.swaps_axes else (width, height)
    shrink = min(info.width / target_w, info.height / target_h)
    if not fast:
        return 8 if shrink >= 16 else 4 if shrink >= 8 else 2 if shrink >= 4 else 1
    factor = 8 if shrink >= 8 else 4 if shrink >= 4 else 2 if shrink >= 2 else 1
    if factor > 1 and int(shrink) == factor:
        factor //= 2
    return factor


def vips_message(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = [line for line in lines[1:] if "unable to" not in line]
    return (detail or lines or ["unknown error"])[0][:200]
