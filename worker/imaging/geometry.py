"""Pure size arithmetic shared by resize and crop (no libvips, unit-tested directly)."""

from dataclasses import dataclass

from pixq.spec import ResizeOptions

SMART = ("attention", "entropy")


@dataclass(frozen=True)
class ResizePlan:
    """Scale the image to ``scaled``, then crop (cover) or embed (contain) to ``final``."""

    scaled: tuple[int, int]
    final: tuple[int, int]
    fit: str


def plan_resize(width: int, height: int, options: ResizeOptions) -> ResizePlan:
    """sharp/imgproxy semantics for a width x height input; see docs/operations.md.

    inside: fit within the box; outside: cover the box, no crop; cover: cover then crop to
    the box; contain: fit within then pad to the box; fill: stretch to the box. Without
    ``enlarge`` the image is never scaled up (fill: per axis), and cover crops to at most
    the scaled size."""
    box_w, box_h = options.width, options.height
    fit = options.fit
    if box_w is None or box_h is None:
        fit = "inside" if fit in ("cover", "contain", "fill") else fit
        scale = box_w / width if box_w is not None else box_h / height
        if not options.enlarge:
            scale = min(scale, 1.0)
        scaled = _scaled(width, height, scale, scale)
        return ResizePlan(scaled, scaled, fit)
    if fit == "fill":
        sx, sy = box_w / width, box_h / height
        if not options.enlarge:
            sx, sy = min(sx, 1.0), min(sy, 1.0)
        scaled = (max(1, round(width * sx)), max(1, round(height * sy)))
        return ResizePlan(scaled, scaled, fit)
    sx, sy = box_w / width, box_h / height
    scale = min(sx, sy) if fit in ("inside", "contain") else max(sx, sy)
    if not options.enlarge:
        scale = min(scale, 1.0)
    scaled = _scaled(width, height, scale, scale, box=(box_w, box_h) if fit != "outside" else None)
    if fit == "cover":
        return ResizePlan(scaled, (min(box_w, scaled[0]), min(box_h, scaled[1])), fit)
    if fit == "contain":
        return ResizePlan(scaled, (box_w, box_h), fit)
    return ResizePlan(scaled, scaled, fit)


def _scaled(width: int, height: int, sx: float, sy: float,
            box: tuple[int, int] | None = None) -> tuple[int, int]:
    out_w, out_h = max(1, round(width * sx)), max(1, round(height * sy))
    if box is not None:
        # The axis that set the scale lands exactly on the box edge (no 199/201 from rounding).
        if abs(width * sx - box[0]) < 1:
            out_w = box[0]
        if abs(height * sy - box[1]) < 1:
            out_h = box[1]
    return out_w, out_h


def gravity_offset(gravity: str, outer: tuple[int, int], inner: tuple[int, int]) -> tuple[int, int]:
    """Top-left of an ``inner`` box placed in ``outer`` by a compass gravity (centre for smart)."""
    spare_w, spare_h = outer[0] - inner[0], outer[1] - inner[1]
    x, y = spare_w // 2, spare_h // 2
    if gravity in ("north", "northeast", "northwest"):
        y = 0
    if gravity in ("south", "southeast", "southwest"):
        y = spare_h
    if gravity in ("west", "northwest", "southwest"):
        x = 0
    if gravity in ("east", "northeast", "southeast"):
        x = spare_w
    return x, y

