"""Step 3: resize with a fit mode (see geometry.plan_resize), then crop or pad to the box."""

import pyvips

from pixq.spec import ResizeOptions
from worker.imaging.geometry import SMART, ResizePlan, gravity_offset, plan_resize


def plan(width: int, height: int, options: ResizeOptions) -> ResizePlan:
    return plan_resize(width, height, options)


def scale(image: pyvips.Image, resize_plan: ResizePlan) -> pyvips.Image:
    """Scale an already decoded image to the plan's scaled size (exact dimensions)."""
    width, height = resize_plan.scaled
    if (width, height) == (image.width, image.height):
        return image
    return image.thumbnail_image(width, height=height, size="force", no_rotate=True)


def finish(image: pyvips.Image, resize_plan: ResizePlan, gravity: str, background: str) -> pyvips.Image:
    """Crop (cover) or pad (contain) the scaled image to the plan's final size."""
    width, height = resize_plan.final
    if (width, height) == (image.width, image.height):
        return image
    if resize_plan.fit == "cover":
        return crop_to(image, width, height, gravity)
    if resize_plan.fit == "contain":
        return pad_to(image, width, height, gravity, background)
    return image


def crop_to(image: pyvips.Image, width: int, height: int, gravity: str) -> pyvips.Image:
    """Cut a width x height window (at most the image) placed by compass or smart gravity."""
    width, height = min(width, image.width), min(height, image.height)
    if (width, height) == (image.width, image.height):
        return image
    if gravity in SMART:
        # smartcrop reads the whole image: give it a memory copy of the (already small) image.
        return image.copy_memory().smartcrop(width, height, interesting=gravity)
    x, y = gravity_offset(gravity, (image.width, image.height), (width, height))
    return image.extract_area(x, y, width, height)


def pad_to(image: pyvips.Image, width: int, height: int, gravity: str, background: str) -> pyvips.Image:
    """Letterbox onto a width x height canvas of ``background`` (transparent if its alpha < 255)."""
    rgba = parse_colour(background)
    if rgba[3] < 255 and not image.hasalpha():
        image = image.bandjoin(255)
    if image.bands <= 2:
        image = image.colourspace("srgb")
    colour = rgba if image.hasalpha() else rgba[:3]
    x, y = gravity_offset(gravity if gravity not in SMART else "centre",
                          (width, height), (image.width, image.height))
    return image.embed(x, y, width, height, extend="background", background=colour)


def parse_colour(value: str) -> list[int]:
    """'#rrggbb' or '#rrggbbaa' to [r, g, b, a]."""
    digits = value.lstrip("#")
    rgba = [int(digits[i:i + 2], 16) for i in range(0, len(digits), 2)]
    return rgba if len(rgba) == 4 else rgba + [255]
