"""Step 2: orientation and colour. After this every image is 8-bit sRGB or 8-bit grey,
with or without one alpha band, upright, with no ICC profile attached (sRGB implied)."""

import pyvips

_GREY = {"b-w", "grey16"}


def orient(image: pyvips.Image) -> pyvips.Image:
    """Apply the EXIF orientation tag and drop it (boxes then refer to the upright image)."""
    return image.autorot()


def to_srgb(image: pyvips.Image, profile_applied: bool = False) -> pyvips.Image:
    """Convert any colour space (CMYK, Lab, 16-bit, float, ...) to 8-bit sRGB or grey.

    An embedded ICC profile is honoured; CMYK without one uses libvips' built-in CMYK
    profile. ``profile_applied`` says the ICC import already happened (thumbnail path)."""
    if image.bands > 5 or (image.bands == 3 and str(image.interpretation) == "multiband"):
        image = image.extract_band(0, n=4 if image.bands > 5 else 3)
    interpretation = str(image.interpretation)
    has_profile = image.get_typeof("icc-profile-data") != 0
    grey = image.bands <= 2 or interpretation in _GREY
    if not profile_applied and not grey and (has_profile or interpretation == "cmyk"):
        try:
            image = image.icc_transform("srgb", embedded=True, input_profile="cmyk"
                                        if interpretation == "cmyk" else "srgb", intent="perceptual")
        except pyvips.Error:
            pass  # a broken profile: fall back to a plain colourspace conversion
    if has_profile or image.get_typeof("icc-profile-data") != 0:
        image = image.copy()
        image.remove("icc-profile-data")
    image = _fix_interpretation(image)
    target = "b-w" if image.bands <= 2 or str(image.interpretation) in _GREY else "srgb"
    if str(image.interpretation) != target or image.format != "uchar":
        image = image.colourspace(target)
    if image.format != "uchar":
        image = image.cast("uchar")
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
