"""Every fact pixq relies on about an image format, in one table (like imgproxy's imagetype).

Sniffing (pixq.sniff), the limits (pixq.limits), request validation (pixq.spec), the
libvips steps (worker.imaging) and storing outputs (worker.execute) all read this table
instead of keeping their own: which libvips loaders read a format, whether it is decoded
by default, whether it may declare several frames, whether pixq writes it and how (libvips
saver suffix and options), whether it holds alpha and an ICC profile, its largest side, its MIME type and file
extension. (Which magic bytes name a format is code, in pixq.sniff.detect_format.)
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class EncodeOptions(Protocol):
    """What a saver needs from a request's output options (pixq.spec.OutputOptions)."""

    quality: int
    lossless: bool
    progressive: bool
    chroma_subsampling: str
    """``4:4:4``, ``4:2:0`` or ``auto`` (SUBSAMPLE_MODE maps it to libvips' subsample_mode)."""


SUBSAMPLE_MODE = {"4:4:4": "off", "4:2:0": "on", "auto": "auto"}
"""A request's ``chroma_subsampling`` as libvips' ``subsample_mode`` (AVIF's saver)."""


@dataclass(frozen=True)
class ImageFormat:
    name: str
    """pixq's name, used in requests, results and errors."""
    mime: str
    extension: str
    """File extension of outputs (``outputs/<tenant>/<job_id>/<variant>.<extension>``)."""
    loaders: tuple[str, ...]
    """libvips loaders that read it (prefixes of ``vips-loader``: ``jpegload`` matches ``jpegload_buffer``)."""
    decode: Literal["trusted", "untrusted"]
    """``trusted``: decoded by default; ``untrusted``: large parsers, only with ENABLE_UNTRUSTED_LOADERS."""
    animated: bool = False
    """The header may declare several frames (held to MAX_ANIMATION_FRAMES; only the first is decoded)."""
    saver: str | None = None
    """Suffix libvips' write_to_buffer picks the saver by; None: pixq does not write this format."""
    save_options: Callable[[EncodeOptions], dict[str, Any]] | None = None
    """The saver's options for a request's output options (metadata stripping is added by the encoder)."""
    alpha: bool = False
    """An output in this format keeps an alpha band (otherwise it is flattened onto ``background``)."""
    icc: bool = False
    """The saver embeds an ICC profile (``icc_profile: keep``; otherwise the output is converted to sRGB)."""
    max_side: int | None = None
    """Largest width or height the saver writes."""
    aliases: tuple[str, ...] = field(default=())
    """Other names a request may use for it."""

    @property
    def writable(self) -> bool:
        return self.saver is not None


LIBVIPS_MAX_COORD = 10_000_000
"""libvips' own bound on an image dimension."""

FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("jpeg", "image/jpeg", "jpg", ("jpegload", "uhdrload"), "trusted",
                icc=True, saver=".jpg", max_side=65_500, aliases=("jpg",),
                save_options=lambda o: {"Q": o.quality, "interlace": o.progressive, "optimize_coding": True}),
    ImageFormat("png", "image/png", "png", ("pngload",), "trusted",
                icc=True, saver=".png", alpha=True, max_side=LIBVIPS_MAX_COORD,
                save_options=lambda o: {"interlace": o.progressive, "compression": 6}),
    ImageFormat("webp", "image/webp", "webp", ("webpload",), "trusted", animated=True,
                icc=True, saver=".webp", alpha=True, max_side=16_383,
                save_options=lambda o: {"Q": o.quality, "lossless": o.lossless, "effort": 4}),
    ImageFormat("avif", "image/avif", "avif", ("heifload",), "trusted", animated=True,
                icc=True, saver=".avif", alpha=True, max_side=65_536,
                save_options=lambda o: {"Q": o.quality, "lossless": o.lossless, "effort": 2,
                                        "compression": "av1",
                                        "subsample_mode": SUBSAMPLE_MODE[o.chroma_subsampling]}),
    ImageFormat("gif", "image/gif", "gif", ("gifload",), "trusted", animated=True,
                saver=".gif", alpha=True, max_side=65_535,
                save_options=lambda o: {"interlace": o.progressive, "effort": 7}),
    ImageFormat("tiff", "image/tiff", "tif", ("tiffload",), "trusted",
                icc=True, saver=".tif", alpha=True, max_side=LIBVIPS_MAX_COORD, aliases=("tif",),
                save_options=lambda o: {"compression": "deflate", "predictor": "horizontal"}),
    ImageFormat("heif", "image/heif", "heic", ("heifload",), "trusted", animated=True, alpha=True),
    ImageFormat("svg", "image/svg+xml", "svg", ("svgload",), "untrusted", alpha=True),
    ImageFormat("pdf", "application/pdf", "pdf", ("pdfload",), "untrusted", alpha=True),
)

BY_NAME: dict[str, ImageFormat] = {fmt.name: fmt for fmt in FORMATS}

TRUSTED_INPUT = frozenset(fmt.name for fmt in FORMATS if fmt.decode == "trusted")
UNTRUSTED_INPUT = frozenset(fmt.name for fmt in FORMATS if fmt.decode == "untrusted")
ANIMATED = frozenset(fmt.name for fmt in FORMATS if fmt.animated)
OUTPUT_NAMES: tuple[str, ...] = tuple(fmt.name for fmt in FORMATS if fmt.writable)
"""Formats a request may ask for (besides ``same``), in the table's order."""
ALIASES: dict[str, str] = {alias: fmt.name for fmt in FORMATS for alias in fmt.aliases}

MAX_REQUEST_SIDE = min(fmt.max_side for fmt in FORMATS if fmt.writable and fmt.max_side)
"""Largest width or height a request may ask for: what every output format can hold (WebP's 16383)."""


def get(name: str) -> ImageFormat:
    """The format called ``name`` (KeyError for one pixq does not know)."""
    return BY_NAME[name]


def output(name: str) -> ImageFormat:
    """A format pixq writes; ValueError otherwise."""
    fmt = BY_NAME.get(name)
    if fmt is None or not fmt.writable:
        raise ValueError(f"pixq does not write {name!r}")
    return fmt


def canonical(name: str) -> str:
    """``jpg`` -> ``jpeg``, ``TIF`` -> ``tiff``; other names lower-cased."""
    name = name.lower()
    return ALIASES.get(name, name)


def read_by(loader: str) -> frozenset[str]:
    """Formats the libvips loader ``loader`` (e.g. ``heifload_buffer``) reads; empty if none of ours."""
    return frozenset(fmt.name for fmt in FORMATS
                     if loader and any(loader.startswith(prefix) for prefix in fmt.loaders))


def mime_of(name: str) -> str:
    fmt = BY_NAME.get(name)
    return fmt.mime if fmt else "application/octet-stream"
