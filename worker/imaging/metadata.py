"""What an input image is, read from its header alone: every job's ``result.input``.

The header is already open when the pipeline checks the limits (worker.imaging.load), so
this costs no decode: a few header fields and, when there is an ICC profile, reading the
profile's description tag out of its bytes. The EXIF subset (camera, lens, time taken,
GPS) is the analyze job's, also read from header fields.
"""

import re
import struct
from typing import Any

import pyvips

from pixq.sniff import ImageInfo


def input_metadata(info: ImageInfo, header: pyvips.Image) -> dict[str, Any]:
    """``{width, height, format, bands, has_alpha, space, icc_description, orientation, frames}``.

    ``width``/``height`` are the *oriented* size (what a viewer shows, what boxes refer to);
    ``space`` is libvips' interpretation (srgb, cmyk, b-w, rgb16, grey16, lab, ...)."""
    return {
        "width": info.oriented_width,
        "height": info.oriented_height,
        "format": info.format,
        "bands": info.bands,
        "has_alpha": bool(info.has_alpha),
        "space": info.interpretation,
        "icc_description": icc_description(_blob(header, "icc-profile-data")),
        "orientation": info.orientation,
        "frames": info.pages,
    }


def _blob(image: pyvips.Image, name: str) -> bytes | None:
    if image.get_typeof(name) == 0:
        return None
    value = image.get(name)
    return bytes(value) if value else None


_ICC_HEADER = 128
_MAX_DESCRIPTION = 200


def icc_description(profile: bytes | None) -> str | None:
    """The profile's ``desc`` tag (ICC v2 textDescriptionType or v4 multiLocalizedUnicode),
    or None without a profile or when the tag is missing or malformed (never raises: a
    broken profile must not fail a job whose pixels libvips can still read)."""
    if not profile or len(profile) < _ICC_HEADER + 4:
        return None
    try:
        (count,) = struct.unpack_from(">I", profile, _ICC_HEADER)
        for index in range(min(count, 100)):
            signature, offset, size = struct.unpack_from(">4sII", profile, _ICC_HEADER + 4 + 12 * index)
            if signature == b"desc":
                return _clean(_read_text_tag(profile[offset:offset + size]))
    except (struct.error, UnicodeDecodeError, ValueError):
        return None
    return None


def _read_text_tag(tag: bytes) -> str | None:
    kind = tag[:4]
    if kind == b"desc":  # v2: uint32 length (with NUL), then ASCII
        (length,) = struct.unpack_from(">I", tag, 8)
        return tag[12:12 + length].split(b"\0", 1)[0].decode("latin-1")
    if kind == b"mluc":  # v4: records of (language, country, length, offset); prefer English
        count, record_size = struct.unpack_from(">II", tag, 8)
        records = [struct.unpack_from(">2s2sII", tag, 16 + record_size * i) for i in range(min(count, 100))]
        if not records:
            return None
        language, _country, length, offset = next((r for r in records if r[0] == b"en"), records[0])
        return tag[offset:offset + length].decode("utf-16-be")
    if kind == b"text":
        return tag[8:].split(b"\0", 1)[0].decode("latin-1")
    return None


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = "".join(char for char in text if char.isprintable()).strip()
    return text[:_MAX_DESCRIPTION] or None


# --- EXIF subset (analyze jobs) -------------------------------------------------------

_CAMERA_FIELDS = {
    "make": "exif-ifd0-Make",
    "model": "exif-ifd0-Model",
    "lens": "exif-ifd2-LensModel",
    "taken_at": "exif-ifd2-DateTimeOriginal",
}
_TAIL = re.compile(r", ([A-Za-z ]+), (\d+) components, (\d+) bytes\)$")
_RATIONALS = re.compile(r"^(-?\d+/-?\d+(?: -?\d+/-?\d+)*) \(")
_TAKEN_AT = re.compile(r"^(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})$")


def exif_subset(header: pyvips.Image, include_gps: bool) -> dict[str, Any]:
    """``{make, model, lens, taken_at}`` (None when absent), plus ``gps`` ``{latitude,
    longitude, altitude}`` in degrees and metres only when ``include_gps`` (a photo's
    location is personal data: it is left out unless the caller asks for it).

    ``taken_at`` is DateTimeOriginal as ISO 8601 without a zone (EXIF records local time)."""
    exif: dict[str, Any] = {key: _ascii(header, field) for key, field in _CAMERA_FIELDS.items()}
    taken = exif["taken_at"]
    match = _TAKEN_AT.match(taken) if taken else None
    exif["taken_at"] = "{}-{}-{}T{}:{}:{}".format(*match.groups()) if match else None
    if include_gps:
        exif["gps"] = _gps(header)
    return exif


def _field(header: pyvips.Image, name: str) -> str | None:
    if header.get_typeof(name) == 0:
        return None
    value = header.get(name)
    return value if isinstance(value, str) else None


def _ascii(header: pyvips.Image, name: str) -> str | None:
    """An ASCII EXIF value. libvips renders each entry as ``raw (readable, Format, N
    components, M bytes)`` and, for ASCII, raw and readable are the same text, so the value
    is found by that symmetry (a value holding parentheses stays intact)."""
    text = _field(header, name)
    tail = _TAIL.search(text) if text else None
    if text is None or tail is None or tail.group(1) != "ASCII":
        return None
    body = text[:tail.start()]
    half = (len(body) - 2) // 2
    if len(body) >= 2 and body[half:half + 2] == " (" and body[:half] == body[half + 2:]:
        value = body[:half].strip()
        return value[:_MAX_DESCRIPTION] or None
    return None


def _rationals(header: pyvips.Image, name: str) -> list[float] | None:
    text = _field(header, name)
    match = _RATIONALS.match(text) if text else None
    if match is None:
        return None
    values = []
    for pair in match.group(1).split():
        numerator, denominator = (int(part) for part in pair.split("/"))
        if denominator == 0:
            return None
        values.append(numerator / denominator)
    return values


def _gps(header: pyvips.Image) -> dict[str, float] | None:
    """Latitude and longitude in signed decimal degrees (S and W negative), altitude in
    metres (below sea level negative); None when the image has no usable position."""
    latitude = _coordinate(header, "Latitude", "S")
    longitude = _coordinate(header, "Longitude", "W")
    if latitude is None or longitude is None:
        return None
    position: dict[str, float] = {"latitude": latitude, "longitude": longitude}
    altitude = _rationals(header, "exif-ifd3-GPSAltitude")
    if altitude:
        reference = (_field(header, "exif-ifd3-GPSAltitudeRef") or "").lower()
        below = reference.startswith("1") or "reference" in reference  # libexif: "Sea level reference" = 1
        position["altitude"] = round(-altitude[0] if below else altitude[0], 2)
    return position


def _coordinate(header: pyvips.Image, axis: str, negative: str) -> float | None:
    parts = _rationals(header, f"exif-ifd3-GPS{axis}")
    reference = _ascii(header, f"exif-ifd3-GPS{axis}Ref")
    if not parts or reference is None:
        return None
    degrees = parts[0] + (parts[1] / 60 if len(parts) > 1 else 0) + (parts[2] / 3600 if len(parts) > 2 else 0)
    return round(-degrees if reference.upper().startswith(negative) else degrees, 6)
