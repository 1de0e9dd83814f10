"""Step 2: orientation and colour. After this every image is 8-bit sRGB or 8-bit grey,
with or without one alpha band, upright, with no ICC profile attached (sRGB implied) -- or,
when a variant asks ``icc_profile: keep``, 8-bit RGB with the input's own RGB profile attached.

``decide`` is the one colour decision, made from the header alone, so that every path
(shrink-on-load thumbnail, full decode, analysis) converts an input the same way: the
thumbnail path passes it to libvips' thumbnail (``thumbnail_options``), the decode path
applies it in ``to_srgb``. Two separate decisions used to disagree (CMYK without a profile
converted with libvips' default intent on resize only; grey with a profile became RGB on
resize only: issue 15).
"""

from dataclasses import dataclass
from typing import Any

import pyvips

_GREY = {"b-w", "grey16"}
_WIDE = {"grey16", "rgb16"}
"""16-bit spaces that need no conversion to reach 8-bit grey or sRGB, only a narrower format."""
INTENT = "perceptual"
"""Rendering intent of every ICC conversion (sharp's too): photos, not proofs."""


@dataclass(frozen=True)
class Conversion:
    """How an input becomes sRGB or grey.

    ``input_profile`` is None when no ICC transform is made (no embedded profile and not
    CMYK); otherwise the profile used when the file embeds none: libvips' built-in ``cmyk``
    for CMYK, ``srgb`` (a no-op fallback) for anything else. An embedded profile always wins.
    Grey with a profile is transformed too but stays one band (``icc_to_srgb``), and never
    inside libvips' thumbnail, whose transform would return three (docs/operations.md)."""

    grey: bool
    input_profile: str | None
    keeps_profile: bool = False
    """The output keeps the input's own RGB profile: no transform, the profile stays attached
    (``icc_profile: keep``; see ``decide``)."""

    @property
    def transforms(self) -> bool:
        return self.input_profile is not None

    def thumbnail_options(self) -> dict[str, Any]:
        """The same conversion as keyword arguments of libvips' thumbnail (none for grey:
        its transform there would return three bands; to_srgb applies it after the shrink)."""
        if not self.transforms or self.grey:
            return {}
        return {"input_profile": self.input_profile, "output_profile": "srgb", "intent": INTENT}


def decide(image: pyvips.Image, keep_profile: bool = False) -> Conversion:
    """The conversion for an image (a header-only load is enough: no pixels are read).

    ``keep_profile`` (a variant's ``icc_profile: keep``) skips the transform only for an RGB
    image with an embedded RGB profile: that profile can go into every output that holds
    one. Grey and CMYK inputs are converted as usual (a grey profile cannot describe the RGB
    a WebP output or a later step makes; most formats cannot hold CMYK), and an input with
    no profile has none to keep."""
    interpretation = str(image.interpretation)
    has_profile = image.get_typeof("icc-profile-data") != 0
    if image.bands <= 2 or interpretation in _GREY:
        return Conversion(grey=True, input_profile="srgb" if has_profile else None)
    if interpretation == "cmyk":
        return Conversion(grey=False, input_profile="cmyk")
    if has_profile and keep_profile and profile_space(image) == "RGB":
        return Conversion(grey=False, input_profile=None, keeps_profile=True)
    if has_profile:
        return Conversion(grey=False, input_profile="srgb")
    return Conversion(grey=False, input_profile=None)


def profile_space(image: pyvips.Image) -> str:
    """The colour space an image's embedded ICC profile describes (its header's bytes 16-19:
    ``RGB``, ``GRAY``, ``CMYK``, ...); empty without a profile."""
    if image.get_typeof("icc-profile-data") == 0:
        return ""
    return bytes(image.get("icc-profile-data"))[16:20].decode("latin-1").strip()


def kept_to_srgb(image: pyvips.Image) -> pyvips.Image:
    """Convert an image that kept its input profile (``icc_profile: keep``) to sRGB after all,
    profile removed: for a variant that asks for sRGB or a format that holds no profile (GIF),
    when another variant of the job keeps it, and before a grayscale step."""
    if image.get_typeof("icc-profile-data") == 0:
        return image
    try:
        out = image.icc_transform("srgb", embedded=True, intent=INTENT)
    except pyvips.Error:
        out = image.copy()
    out.remove("icc-profile-data")
    return out


def icc_to_srgb(image: pyvips.Image, conversion: Conversion) -> pyvips.Image:
    """Apply the conversion's ICC transform (if any) to a decoded image; a broken profile
    falls back to to_srgb's plain colourspace conversion.

    Grey with a profile goes through the same transform (its profile honoured, as sharp does:
    concert.jpg differed by MAD ~2 with the profile dropped) and keeps one band: the sRGB
    result of a grey input has R = G = B, so band 0 is the grey (plus its alpha, untouched)."""
    if not conversion.transforms:
        return image
    depth = 16 if image.format == "ushort" else 8
    try:
        out = image.icc_transform("srgb", embedded=True, input_profile=conversion.input_profile, intent=INTENT,
                                  depth=depth)
    except pyvips.Error:
        return image
    if conversion.grey:
        grey = out.extract_band(0).copy(interpretation="grey16" if depth == 16 else "b-w")
        if image.hasalpha():
            alpha = image.extract_band(image.bands - 1)
            grey = grey.bandjoin(alpha if alpha.format == grey.format else alpha.cast(grey.format))
        grey.remove("icc-profile-data")  # the sRGB profile of a 3-band result: done, never again
        return grey
    return out


def orient(image: pyvips.Image) -> pyvips.Image:
    """Apply the EXIF orientation tag and drop it (boxes then refer to the upright image)."""
    return image.autorot()


def to_srgb(image: pyvips.Image, profile_applied: bool = False, keep_profile: bool = False) -> pyvips.Image:
    """Convert any colour space (CMYK, Lab, 16-bit, float, ...) to 8-bit sRGB or grey.

    Applies ``decide``'s ICC transform unless ``profile_applied`` says libvips' thumbnail
    already did (it was given ``thumbnail_options``); then finishes the format: profile
    removed, 8 bits, sRGB or grey. With ``keep_profile``, an RGB image with an RGB profile
    keeps it and its values (8 bits, no transform: ``decide``)."""
    if image.bands > 5 or (image.bands == 3 and str(image.interpretation) == "multiband"):
        image = image.extract_band(0, n=4 if image.bands > 5 else 3)
    conversion = decide(image, keep_profile)
    if not profile_applied or conversion.grey:
        image = icc_to_srgb(image, conversion)
    if image.get_typeof("icc-profile-data") != 0 and not conversion.keeps_profile:
        image = image.copy()
        image.remove("icc-profile-data")
    image = _fix_interpretation(image)
    target = "b-w" if image.bands <= 2 or str(image.interpretation) in _GREY else "srgb"
    if image.format == "ushort" and str(image.interpretation) in _WIDE:
        # 16-bit grey or sRGB to 8 bits: the high byte of every band, alpha included, as sharp
        # does (tests/differential, bggn4a16.png: 256 of 256 pixels equal). libvips' colourspace
        # divides by 257 instead (16913 -> 65, sharp 66), and its grey16 -> b-w path differs again.
        image = (image >> 8).cast("uchar").copy(interpretation=target)
    alpha8 = None
    if image.format == "ushort" and image.hasalpha():
        # Other 16-bit spaces (CMYK, Lab) convert through colourspace; their alpha by the same
        # high-byte rule as above.
        alpha8 = (image.extract_band(image.bands - 1) >> 8).cast("uchar")
        image = image.extract_band(0, n=image.bands - 1)
    if str(image.interpretation) != target or image.format != "uchar":
        image = image.colourspace(target)
    if image.format != "uchar":
        image = image.cast("uchar")
    if alpha8 is not None:
        image = image.bandjoin(alpha8)
    return image


def _fix_interpretation(image: pyvips.Image) -> pyvips.Image:
    """Give images with a meaningless interpretation (multiband, matrix, ...) a usable one."""
    interpretation = str(image.interpretation)
    known = {"srgb", "rgb", "rgb16", "b-w", "grey16", "cmyk", "lab", "labq", "labs", "lch",
             "cmc", "xyz", "yxy", "scrgb", "hsv"}
    if interpretation in known:
        return image
    if image.format not in ("uchar", "ushort"):
        image = image.cast("uchar") if image.format in ("char", "short", "int", "uint") else image
    wide = image.format == "ushort"
    if image.bands <= 2:
        return image.copy(interpretation="grey16" if wide else "b-w")
    return image.copy(interpretation="rgb16" if wide else "srgb")
