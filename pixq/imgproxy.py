"""What an imgproxy URL asks for: its signature, its source and its processing options, as a
pixq ``PipelineSpec`` (docs/on-the-fly.md).

The URL format and signature are imgproxy's, so an existing imgproxy URL builder works
unchanged against ``/img``: ``/{signature}/{options}/plain/{percent-encoded source}@{ext}`` or
``/{signature}/{options}/{url-safe base64 source, may be split by "/"}.{ext}``. The signature
is URL-safe base64 (no padding) of HMAC-SHA256(key, salt + the path after the signature),
truncated to IMG_SIGNATURE_SIZE bytes; several key/salt pairs may be active (rotation).

Pure logic: no I/O. The route (api/, helper "imgroute") mounts it, looks the result up in the
cache by ``canonical`` and submits ``spec`` as a pipeline job. Every option pixq cannot honour
is refused with 422 INVALID_PARAMETERS naming it, never silently ignored: a URL that renders
differently from what imgproxy would render is a bug, a refused one is a clear message.
"""

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pixq import formats
from pixq.errors import ErrorCode, PixqError
from pixq.sources import SOURCE_URL_MAX
from pixq.spec import (MAX_DIMENSION, BlurStep, CropStep, PipelineSpec, ResizeStep, RotateStep, SharpenStep,
                       Variant, describe_validation_error)

if TYPE_CHECKING:  # pixq.settings imports this module lazily (its validators), never at import time
    from pixq.settings import Settings

SOURCE_SCHEMES = ("s3", "local", "http", "https")
"""Sources an /img URL may name: pixq's S3 storage, local storage, the web (through the SSRF guard)."""

GRAVITIES = {"no": "north", "so": "south", "ea": "east", "we": "west", "noea": "northeast",
             "nowe": "northwest", "soea": "southeast", "sowe": "southwest", "ce": "centre",
             "sm": "attention"}
"""imgproxy gravity -> pixq gravity. ``sm`` (libvips smartcrop) is pixq's ``attention``, the
same libvips operation. ``fp``, ``obj`` and ``objw`` have no pixq counterpart: refused."""

RESIZING_TYPES = ("fit", "fill", "fill-down", "force", "auto")

ALIASES = {name: long for long, short in (
    ("resize", "rs"), ("size", "s"), ("resizing_type", "rt"), ("width", "w"), ("height", "h"),
    ("gravity", "g"), ("crop", "c"), ("quality", "q"), ("format", "f"), ("enlarge", "el"),
    ("extend", "ex"), ("background", "bg"), ("blur", "bl"), ("sharpen", "sh"), ("rotate", "rot"),
    ("preset", "pr"), ("expires", "exp"), ("cachebuster", "cb"),
) for name in (long, short)} | {"ext": "format"}
"""Every option name pixq accepts (imgproxy's long and short names) -> the long name."""

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
"""Go's strconv.ParseBool, which imgproxy uses (imgproxy reads anything else as false with a
warning; pixq refuses it)."""
_INT = re.compile(r"^[+-]?[0-9]{1,18}$")  # longer: no sensible value, and int() refuses > 4300 digits
_FLOAT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_HEX_COLOUR = re.compile(r"^([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_BAD_PERCENT = re.compile(r"%(?![0-9a-fA-F]{2})")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:$")

DEFAULT_QUALITY = 80
"""pixq's default quality (pixq.spec.OutputOptions), which ``q:0`` (imgproxy's "the default") means."""
TRANSPARENT_PADDING = "#ffffff00"
"""``extend`` without ``background``: transparent bars in PNG/WebP/AVIF, white on JPEG, as imgproxy."""


def _invalid(message: str) -> PixqError:
    return PixqError(ErrorCode.INVALID_PARAMETERS, message)


def _bad_request(message: str) -> PixqError:
    return PixqError(ErrorCode.INVALID_REQUEST, message)


# --- Signing ---------------------------------------------------------------------------------


def parse_hex_list(value: str) -> list[bytes]:
    """``IMG_KEY`` / ``IMG_SALT``: comma-separated hex strings -> bytes (ValueError names the bad item's position)."""
    items = [item.strip() for item in value.split(",")] if value.strip() else []
    decoded = []
    for position, item in enumerate(items, start=1):
        if not item:
            raise ValueError(f"item {position} is empty (expected comma-separated hex strings)")
        try:
            decoded.append(bytes.fromhex(item))
        except ValueError:
            raise ValueError(f"item {position} is not hex (expected e.g. the output of "
                             "`openssl rand -hex 32`)") from None
    return decoded


@dataclass(frozen=True)
class Signing:
    """The key/salt pairs URLs are signed with, tried in order (the first signs; the others
    are older pairs still accepted while builders move over)."""

    pairs: tuple[tuple[bytes, bytes], ...] = ()
    size: int = 32
    allow_unsigned: bool = False
    """IMG_ALLOW_UNSIGNED, imgproxy's "no key configured": the signature segment is any string
    (``insecure``, ``_``) and is not checked. Never in production: anyone can then ask any size."""

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Signing":
        keys = parse_hex_list(settings.img_key)
        salts = parse_hex_list(settings.img_salt)
        return cls(pairs=tuple(zip(keys, salts, strict=True)), size=settings.img_signature_size,
                   allow_unsigned=settings.img_allow_unsigned)

    @property
    def enabled(self) -> bool:
        """Whether /img serves at all: a key is configured, or unsigned URLs are allowed."""
        return bool(self.pairs) or self.allow_unsigned

    def sign(self, path: str, pair: int = 0) -> str:
        """The signature of ``path`` (everything after the signature segment, from its "/")."""
        key, salt = self.pairs[pair]
        digest = hmac.new(key, salt + path.encode(), hashlib.sha256).digest()[: self.size]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, signature: str, path: str) -> None:
        """Raise SIGNATURE_INVALID unless some pair signed ``path``. Every pair is compared in
        constant time (hmac.compare_digest), and all of them, so timing tells nothing."""
        if not self.pairs:
            if self.allow_unsigned:
                return
            raise PixqError(ErrorCode.SIGNATURE_INVALID, "no IMG_KEY is configured, and unsigned URLs are not allowed")
        given = signature.encode()
        matched = False
        for index in range(len(self.pairs)):
            matched |= hmac.compare_digest(self.sign(path, index).encode(), given)
        if not matched:
            raise PixqError(ErrorCode.SIGNATURE_INVALID, "the URL's signature does not match its path")


# --- Options ---------------------------------------------------------------------------------


@dataclass
class _Options:
    """The URL's options once all are applied: as in imgproxy, each option sets fields and a
    later one overrides an earlier one, so their order matters only between options setting
    the same field."""

    resizing_type: str = "fit"
    width: int = 0
    height: int = 0
    enlarge: bool = False
    extend: bool = False
    extend_gravity: str = "centre"
    gravity: str = "centre"
    crop: tuple[int, int, str | None] | None = None
    rotate: int = 0
    background: str | None = None
    blur: float | None = None
    sharpen: float | None = None
    quality: int = 0
    format: str | None = None
    cachebuster: str = ""
    expires: int | None = None
    presets_used: list[str] = field(default_factory=list)


def _count(name: str, args: list[str], most: int, least: int = 1) -> None:
    if not least <= len(args) <= most:
        raise _invalid(f"{name}: expected {least} to {most} arguments, got {len(args)} ({':'.join(args)!r})")


def _int(name: str, arg: str, low: int, high: int) -> int:
    if not _INT.match(arg) or not low <= int(arg) <= high:
        raise _invalid(f"{name}: expected a whole number from {low} to {high}, got {arg!r}")
    return int(arg)


def _float(name: str, arg: str) -> float:
    if not _FLOAT.match(arg) or not math.isfinite(float(arg)):
        raise _invalid(f"{name}: expected a number, got {arg!r}")
    return float(arg)


def _bool(name: str, arg: str) -> bool:
    if arg in _TRUE:
        return True
    if arg in _FALSE:
        return False
    raise _invalid(f"{name}: expected 1, t, true, 0, f or false, got {arg!r}")


def _gravity(name: str, args: list[str], smart: bool = True) -> str:
    """``type[:x_offset:y_offset]`` -> a pixq gravity. Offsets other than 0 are refused: pixq
    places a window by compass point only."""
    kind = args[0]
    if kind not in GRAVITIES or (kind == "sm" and not smart):
        allowed = ", ".join(g for g in GRAVITIES if smart or g != "sm")
        why = " (focus-point and object gravities have no pixq counterpart)" if kind in ("fp", "obj", "objw") else ""
        raise _invalid(f"{name}: unsupported gravity {kind!r}{why}; expected one of {allowed}")
    offsets = args[1:]
    if kind == "sm" and offsets:
        raise _invalid(f"{name}: smart gravity takes no offsets")
    if len(offsets) > 2:
        raise _invalid(f"{name}: expected type[:x_offset:y_offset], got {':'.join(args)!r}")
    for offset in offsets:
        if _float(name, offset) != 0:
            raise _invalid(f"{name}: gravity offsets are not supported (got {offset!r}); only 0")
    return GRAVITIES[kind]


def _dimension(name: str, arg: str) -> int:
    return _int(name, arg, 0, MAX_DIMENSION)


def _apply_size(o: _Options, args: list[str]) -> None:
    _count("size", args, 7, 0)
    if len(args) > 0 and args[0]:
        o.width = _dimension("width", args[0])
    if len(args) > 1 and args[1]:
        o.height = _dimension("height", args[1])
    if len(args) > 2 and args[2]:
        o.enlarge = _bool("enlarge", args[2])
    if len(args) > 3 and args[3]:
        _apply_extend(o, args[3:])


def _apply_extend(o: _Options, args: list[str]) -> None:
    _count("extend", args, 4)
    o.extend = _bool("extend", args[0])
    if len(args) > 1:
        o.extend_gravity = _gravity("extend", args[1:], smart=False)


def _apply_resizing_type(o: _Options, args: list[str]) -> None:
    _count("resizing_type", args, 1)
    if args[0] not in RESIZING_TYPES:
        raise _invalid(f"resizing_type: unknown {args[0]!r}; expected one of {', '.join(RESIZING_TYPES)}")
    o.resizing_type = args[0]


def _apply_crop(o: _Options, args: list[str]) -> None:
    """``crop:width:height[:gravity]``. Only whole-pixel sizes: imgproxy's relative (< 1) and
    0 (= the full side) sizes need the source's size, which is not known when the URL is read."""
    _count("crop", args, 5)
    sizes = []
    for index, label in enumerate(("crop width", "crop height")):
        arg = args[index] if index < len(args) else "0"
        value = _float(label, arg)
        if value < 1 or value != int(value) or value > MAX_DIMENSION:
            raise _invalid(f"{label}: pixq crops by whole pixels from 1 to {MAX_DIMENSION}, got {arg!r} "
                           "(relative and 0 sizes depend on the source's size, unknown when the URL is read)")
        sizes.append(int(value))
    gravity = _gravity("crop", args[2:]) if len(args) > 2 else None
    o.crop = (sizes[0], sizes[1], gravity)


def _apply_background(o: _Options, args: list[str]) -> None:
    if len(args) == 1:
        if not args[0]:
            o.background = None
            return
        if not _HEX_COLOUR.match(args[0]):
            raise _invalid(f"background: expected a hex colour (fff, ffffff) or R:G:B, got {args[0]!r}")
        hex_colour = args[0] if len(args[0]) == 6 else "".join(char * 2 for char in args[0])
        o.background = f"#{hex_colour.lower()}"
    elif len(args) == 3:
        o.background = "#" + "".join(f"{_int('background', arg, 0, 255):02x}" for arg in args)
    else:
        raise _invalid(f"background: expected a hex colour or R:G:B, got {':'.join(args)!r}")


def _apply_format(o: _Options, name: str, value: str) -> None:
    fmt = formats.canonical(value)
    if fmt not in formats.OUTPUT_NAMES:
        raise _invalid(f"{name}: pixq does not write {value!r} (it writes {', '.join(formats.OUTPUT_NAMES)}; "
                       "jpg and tif are accepted too)")
    o.format = fmt


def _apply_expires(o: _Options, args: list[str]) -> None:
    _count("expires", args, 1)
    if not _INT.match(args[0]):
        raise _invalid(f"expires: expected a unix timestamp, got {args[0]!r}")
    stamp = int(args[0])
    if 0 < stamp < time.time():
        raise PixqError(ErrorCode.URL_EXPIRED, "the URL has expired (its expires option is in the past)")
    o.expires = stamp if stamp > 0 else None


def _apply(o: _Options, name: str, args: list[str], presets: dict[str, str]) -> None:
    """One option. ``name`` as written in the URL (alias or long)."""
    option = ALIASES.get(name)
    if option is None:
        raise _invalid(f"unknown option {name!r} (pixq supports {', '.join(sorted(set(ALIASES.values())))}; "
                       "docs/on-the-fly.md lists what each means)")
    match option:
        case "resize":
            _count("resize", args, 8)
            if args[0]:
                _apply_resizing_type(o, args[:1])
            _apply_size(o, args[1:])
        case "size":
            _apply_size(o, args)
        case "resizing_type":
            _apply_resizing_type(o, args)
        case "width":
            _count("width", args, 1)
            o.width = _dimension("width", args[0])
        case "height":
            _count("height", args, 1)
            o.height = _dimension("height", args[0])
        case "enlarge":
            _count("enlarge", args, 1)
            o.enlarge = _bool("enlarge", args[0])
        case "extend":
            _apply_extend(o, args)
        case "gravity":
            o.gravity = _gravity("gravity", args)
        case "crop":
            _apply_crop(o, args)
        case "rotate":
            _count("rotate", args, 1)
            angle = _int("rotate", args[0], -3600, 3600)
            if angle % 90:
                raise _invalid(f"rotate: only multiples of 90 degrees, got {args[0]!r}")
            o.rotate = angle % 360
        case "background":
            _apply_background(o, args)
        case "blur":
            _count("blur", args, 1)
            o.blur = _float("blur", args[0])
            if not 0.3 <= o.blur <= 100:
                raise _invalid(f"blur: pixq blurs with a sigma from 0.3 to 100, got {args[0]!r}")
        case "sharpen":
            _count("sharpen", args, 1)
            o.sharpen = _float("sharpen", args[0])
            if not 0.3 <= o.sharpen <= 10:
                raise _invalid(f"sharpen: pixq sharpens with a sigma from 0.3 to 10, got {args[0]!r}")
        case "quality":
            _count("quality", args, 1)
            o.quality = _int("quality", args[0], 0, 100)
        case "format":
            _count("format", args, 1)
            _apply_format(o, "format", args[0])
        case "cachebuster":
            _count("cachebuster", args, 1)
            o.cachebuster = args[0]
        case "expires":
            _apply_expires(o, args)
        case "preset":
            for preset in args:
                _apply_preset(o, preset, presets)


def _apply_preset(o: _Options, preset: str, presets: dict[str, str]) -> None:
    if preset not in presets:
        known = ", ".join(sorted(presets)) or "none are configured (IMG_PRESETS)"
        raise _invalid(f"preset: unknown preset {preset!r} ({known})")
    if preset in o.presets_used:  # a preset naming itself, directly or not: IMG_PRESETS refuses it at start
        raise _invalid(f"preset: {preset!r} is used recursively")
    o.presets_used.append(preset)
    for segment in split_options(presets[preset]):
        name, _, rest = segment.partition(":")
        _apply(o, name, rest.split(":"), presets)
    o.presets_used.pop()


def split_options(text: str) -> list[str]:
    """A preset's ``opt1:a/opt2:b`` -> segments; each must read ``name:args`` (INVALID_PARAMETERS otherwise)."""
    segments = text.strip().strip("/").split("/")
    for segment in segments:
        if ":" not in segment:
            raise _invalid(f"{segment!r} is not an option (expected name:arguments)")
    return segments


def parse_presets(text: str) -> dict[str, str]:
    """IMG_PRESETS, ``name=opt1:a/opt2:b;name2=...``, checked whole: every option known and
    valid, no recursion (ValueError says what is wrong). A preset named ``default`` applies to
    every URL first, as in imgproxy."""
    presets: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, options = item.partition("=")
        name = name.strip()
        if not sep or not re.match(r"^[A-Za-z0-9_-]+$", name) or not options.strip():
            raise ValueError(f"{item!r}: expected name=option:args/option:args (names: letters, digits, _ and -)")
        if name in presets:
            raise ValueError(f"{name!r} is defined twice")
        presets[name] = "/".join(segment.strip() for segment in options.strip().strip("/").split("/"))
    for name in presets:
        try:
            _apply(_Options(), "preset", [name], presets)
        except PixqError as exc:
            raise ValueError(f"preset {name!r}: {exc.message}") from None
    return presets


# --- The spec --------------------------------------------------------------------------------


def _main_resize(o: _Options) -> dict[str, Any] | None:
    """The resize the options ask for, as pixq placement fields; None when no size is given."""
    if not o.width and not o.height:
        return None
    enlarge = o.enlarge
    match o.resizing_type:
        case "fit":
            fit = "inside"
        case "fill":
            fit = "cover"
        case "fill-down":
            fit, enlarge = "cover", False
        case "force":
            fit = "fill"
        case _:  # auto: fill when source and box have the same orientation, else fit
            if o.width and o.height:
                raise _invalid("resizing_type: auto with both width and height depends on the source's "
                               "orientation, which is not known when the URL is read; use fit or fill")
            fit = "inside"  # one side given: fill and fit give the same image
    if fit == "cover" and not (o.width and o.height):
        fit = "inside"  # the same image (as pixq.spec.ResizeOptions does), so the same canonical string
    return {"width": o.width or None, "height": o.height or None, "fit": fit, "enlarge": enlarge,
            "gravity": o.gravity}


def _to_spec(o: _Options) -> PipelineSpec:
    """imgproxy's pipeline (rotate, crop, resize, filters, extend) as pixq steps and one variant.

    The last geometric operation goes into the variant when nothing follows it (pixq then
    shrinks on load); otherwise it is a step, so blur and sharpen see the resized image as in
    imgproxy (blurring before a resize would change the sigma's meaning)."""
    ops: list[Any] = []
    if o.rotate:
        ops.append(RotateStep(op="rotate", angle=o.rotate))
    if o.crop is not None:
        width, height, gravity = o.crop
        ops.append(CropStep(op="crop", width=width, height=height, gravity=gravity or o.gravity))
    main = _main_resize(o)
    if main is not None:
        ops.append(main)
    if o.blur is not None:
        ops.append(BlurStep(op="blur", sigma=o.blur))
    if o.sharpen is not None:
        ops.append(SharpenStep(op="sharpen", sigma=o.sharpen))
    if o.extend:
        if not (o.width and o.height):
            raise _invalid("extend: needs both width and height (pixq pads to a box)")
        pad = {"width": o.width, "height": o.height, "fit": "contain", "enlarge": False,
               "gravity": o.extend_gravity, "background": o.background or TRANSPARENT_PADDING}
        if ops and ops[-1] is main and main["fit"] == "inside":
            ops[-1] = {**pad, "enlarge": main["enlarge"]}  # fit then pad is exactly pixq's contain
        else:
            ops.append(pad)
    placement: dict[str, Any] = {}
    if ops and isinstance(ops[-1], dict):
        placement = ops.pop()
    steps = [ResizeStep(op="resize", **op) if isinstance(op, dict) else op for op in ops]
    output = {"format": o.format or "same", "quality": o.quality or DEFAULT_QUALITY}
    background = placement.pop("background", None) or o.background
    if background:
        output["background"] = background
    return PipelineSpec(steps=steps, variants=[Variant(name="default", **placement, **output)])


# --- The URL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageUrl:
    source: str
    """As written in the URL, decoded: ``s3://bucket/key``, ``local://key``, ``http(s)://...``."""
    spec: PipelineSpec
    """Steps, then exactly one variant named ``default`` (format ``same`` when the URL chose none)."""
    format_given: bool
    """The URL chose the output format (``@ext``, ``.ext``, ``format:``); False lets the route
    negotiate WebP/AVIF from ``Accept``."""
    expires: int | None
    """Unix seconds from ``expires:`` (already checked: an expired URL raised URL_EXPIRED)."""
    canonical: str
    """What the URL asks for, in one fixed form: two URLs that mean the same have the same
    string (aliases, option order, defaults, presets and equivalent spellings all resolve to
    the same compiled spec). The compact JSON of ``spec`` with defaults left out, then
    ``|cb:<cachebuster>`` when there is one. ``expires`` and the source are not part of it."""


def _decode_source(parts: list[str]) -> tuple[str, str]:
    """The source URL and the extension (empty when none) from the path segments after the options."""
    if not parts or not parts[0]:
        raise _bad_request("the image URL is empty")
    if parts[0] == "plain" and len(parts) > 1:
        encoded, *ext = "/".join(parts[1:]).split("@")
        if _BAD_PERCENT.search(encoded):
            raise _bad_request("the plain source URL has a malformed %-escape")
        try:
            source = urllib.parse.unquote(encoded, errors="strict")
        except UnicodeDecodeError:
            raise _bad_request("the plain source URL is not UTF-8 once %-decoded") from None
    else:
        encoded, *ext = "".join(parts).split(".")
        encoded = encoded.rstrip("=")
        if not _BASE64URL.match(encoded):
            raise _bad_request("the source is neither plain/... nor URL-safe base64")
        try:
            source = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _bad_request("the base64 source does not decode to a UTF-8 URL") from None
    if len(ext) > 1:
        raise _bad_request("several extensions are given")
    return source, ext[0] if ext else ""


def _check_source(source: str) -> str:
    if not source:
        raise _bad_request("the image URL is empty")
    if len(source) > SOURCE_URL_MAX:
        raise _bad_request(f"the source URL is longer than {SOURCE_URL_MAX} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in source):
        raise _bad_request("the source URL holds control characters")
    scheme, sep, rest = source.partition("://")
    if not sep or scheme.lower() not in SOURCE_SCHEMES:
        raise _bad_request(f"the source must start with {', '.join(s + '://' for s in SOURCE_SCHEMES)}")
    if scheme.lower() == "s3":
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise _bad_request("an s3 source reads s3://bucket/key")
    elif not rest.strip("/"):
        raise _bad_request(f"the {scheme} source names nothing")
    return source


def parse_image_path(path: str, signing: Signing, presets: dict[str, str] | None = None) -> ImageUrl:
    """``path`` is the request path after "/img" (starts with "/"), percent-decoding NOT yet
    applied (the signature covers the path as sent). ``presets`` is ``parse_presets(IMG_PRESETS)``.

    Raises PixqError: SIGNATURE_INVALID (403), URL_EXPIRED (410), INVALID_PARAMETERS (422) for
    an unknown, malformed or unsupported option (the message names it), INVALID_REQUEST (400)
    for a malformed path or source."""
    if not path.startswith("/") or "/" not in path[1:]:
        raise _bad_request("expected /{signature}/{options}/{source}")
    if not path.isascii():  # what arrives over HTTP is percent-encoded; the signature covers those bytes
        raise _bad_request("the path holds non-ASCII characters: percent-encode them")
    signature, _, rest = path[1:].partition("/")
    parts = rest.split("/")
    index = 0  # where the source starts: the first segment that is not name:args (imgproxy's rule)
    while index < len(parts) and ":" in parts[index]:
        index += 1
    if parts[index:index + 1] == ["plain"] and len(parts) > index + 2 and _SCHEME.match(parts[index + 1]) \
            and parts[index + 2]:
        # A proxy that merged "//" made plain/https://host into plain/https:/host; imgproxy
        # repairs it before checking the signature (the builder signed the "//"), so does pixq.
        parts.insert(index + 2, "")
    signing.verify(signature, "/" + "/".join(parts))  # before anything else: an unsigned URL learns nothing
    presets = presets or {}
    options = _Options()
    if "default" in presets:
        _apply_preset(options, "default", presets)
    for segment in parts[:index]:
        name, _, args = segment.partition(":")
        _apply(options, name, args.split(":"), presets)
    source, extension = _decode_source(parts[index:])
    if extension:
        _apply_format(options, "extension", extension)
    try:
        spec = _to_spec(options)
    except ValidationError as exc:  # the checks above should leave none; a 422 rather than a 500
        raise _invalid(describe_validation_error(exc)) from None
    canonical = json.dumps(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=True,
                           separators=(",", ":"))
    if options.cachebuster:
        canonical += f"|cb:{options.cachebuster}"
    return ImageUrl(source=_check_source(source), spec=spec, format_given=options.format is not None,
                    expires=options.expires, canonical=canonical)
