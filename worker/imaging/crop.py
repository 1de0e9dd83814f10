"""Crop step: an explicit box, or width x height placed by gravity (compass or smart)."""

import pyvips

from pixq.errors import ErrorCode, PixqError
from pixq.sniff import crop_message
from pixq.spec import CropStep
from worker.imaging.resize import crop_to


def crop(image: pyvips.Image, step: CropStep) -> pyvips.Image:
    """Box outside the image: CROP_OUT_OF_BOUNDS. Gravity crop larger than the image: the
    window is clamped to the image (nothing to cut on that axis)."""
    if step.is_box:
        if step.x + step.width > image.width or step.y + step.height > image.height:
            raise PixqError(ErrorCode.CROP_OUT_OF_BOUNDS, crop_message(step, image.width, image.height))
        return image.extract_area(step.x, step.y, step.width, step.height)
    return crop_to(image, step.width, step.height, step.gravity)
