"""The differential grid: pixq requests and the same requests spelled in sharp's API.

Each Case is one pixq job (its type and request parameters, exactly what a client sends to
/resize, /crop or /jobs) and ``sharp``: the literal translation into sharp calls, stage by stage
(see sharp_runner.mjs). The translation is deliberately mechanical (same names, same numbers), so
that where pixq's rule differs from sharp's it shows up as a difference; such a case names the
accepted difference (test_vs_sharp.ACCEPTED) and gives ``equivalent``: the sharp calls that
express pixq's rule, which pixq must then match.

The focused grid (``focused()``, 122 cases, ~8 s) runs in `make test`; ``full()`` (230 cases,
~16 s) adds every orientation on every path, every colour input in every lossy format and more
gravities, for PIXQ_DIFF_FULL=1 (`make test-differential-full`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pyvips

from tests.fixtures import fixture

Stage = list[dict[str, Any]]

JPEG_PHOTO = "sharp/Landscape_1.jpg"  # 600x450, no EXIF rotation, no ICC profile
BIG_PHOTO = "sharp/2569067123_aca715a2ee_o.jpg"  # 2725x2225: shrink-on-load at 1/4
SMALL_PNG = "sharp/dot-and-lines.png"  # 100x100, hard edges: enlargement
ALPHA_PNG = "sharp/with-alpha.png"  # 256x192 RGBA

COLOUR_INPUTS = {
    # name in the case id -> fixture: one per colour situation the issue lists
    "cmyk-icc": "sharp/Channel_digital_image_CMYK_color.jpg",
    "cmyk-noicc": "sharp/Channel_digital_image_CMYK_color_no_profile.jpg",
    "cmyk-noicc-pil": "pillow/pil_sample_cmyk.jpg",
    "cmyk-noicc-tiff": "pillow/tiff_strip_cmyk_jpeg.tif",
    "grey-icc": "sharp/concert.jpg",
    "grey-noicc": "pillow/hopper_gray.jpg",
    "grey16-alpha": "sharp/bggn4a16.png",
    "grey-alpha": "sharp/grey-8bit-alpha.png",
    "rgb16": "sharp/Flag_of_the_Netherlands-16bit.png",
    "rgba": ALPHA_PNG,
    "palette-png": "pillow/hopper_wal.png",
    "palette-gif": "pillow/hopper.gif",
    "rgb-icc-tiff": "pillow/tiff_adobe_deflate.tif",
    "rgb-icc-jpeg": "sharp/Landscape_2.jpg",
}

SHARP_OUTPUT = {
    # pixq's saver options (pixq/formats.py) in sharp's words; metadata stripped on both sides
    "jpeg": {"quality": 80, "progressive": False, "optimiseCoding": True},
    "png": {"compressionLevel": 6, "progressive": False},
    "webp": {"quality": 80, "effort": 4, "lossless": False},
    # pixq's chroma_subsampling defaults to 4:4:4, sharp's default too
    "avif": {"quality": 80, "effort": 2, "lossless": False, "chromaSubsampling": "4:4:4"},
}


@dataclass(frozen=True)
class Case:
    id: str
    input: str
    """fixture name (tests/fixtures)."""
    job: str
    """pixq job type: resize, crop or pipeline."""
    params: dict[str, Any]
    """the request's parameters, as a client sends them."""
    sharp: list[Stage]
    """the same request in sharp's calls, translated literally."""
    format: str
    accepted: tuple[str, ...] = ()
    """ACCEPTED differences this case shows by design; ``equivalent`` is then pixq's documented
    rule spelled in sharp's calls, which pixq must match within the exact tolerance."""
    equivalent: list[Stage] | None = None

    def runner_case(self, stages: list[Stage], out: str) -> dict[str, Any]:
        return {"id": self.id, "input": str(fixture(self.input)), "stages": stages,
                "output": {"format": self.format, "options": SHARP_OUTPUT[self.format]}, "out": out}


def rgba(colour: str) -> dict[str, float]:
    digits = colour.lstrip("#")
    values = [int(digits[i:i + 2], 16) for i in range(0, len(digits), 2)]
    return {"r": values[0], "g": values[1], "b": values[2], "alpha": (values[3] if len(values) == 4 else 255) / 255}


def sharp_resize(params: dict[str, Any]) -> dict[str, Any]:
    """pixq's width/height/fit/gravity/enlarge/background as sharp's resize options: the same
    names and values (sharp's fit names are pixq's; its ``position`` takes pixq's gravities)."""
    options: dict[str, Any] = {"fit": params.get("fit", "inside"), "position": params.get("gravity", "centre"),
                               "withoutEnlargement": not params.get("enlarge", False),
                               "background": rgba(params.get("background", "#ffffff"))}
    for side in ("width", "height"):
        if params.get(side) is not None:
            options[side] = params[side]
    return {"op": "resize", "options": options}


def finishing(fmt: str, background: str = "#ffffff") -> Stage:
    """pixq flattens alpha onto ``background`` for JPEG (sharp's flatten is a no-op without alpha)."""
    return [{"op": "flatten", "background": rgba(background)}] if fmt == "jpeg" else []


def oriented_size(input: str) -> tuple[int, int]:
    image = pyvips.Image.new_from_file(str(fixture(input)))
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    return (image.height, image.width) if orientation in (5, 6, 7, 8) else (image.width, image.height)


def compass_offset(gravity: str, outer: tuple[int, int], inner: tuple[int, int]) -> tuple[int, int]:
    """Where pixq documents a compass-gravity window or padded image (docs/operations.md,
    "Gravity"): centred at spare // 2, like libvips' own crop and embed."""
    spare_w, spare_h = outer[0] - inner[0], outer[1] - inner[1]
    x = 0 if "west" in gravity else spare_w if "east" in gravity else spare_w // 2
    y = 0 if "north" in gravity else spare_h if "south" in gravity else spare_h // 2
    return x, y


@dataclass(frozen=True)
class Plan:
    """pixq's documented resize (docs/operations.md, "Resize"): scale to ``scaled``, then crop
    (cover) or pad (contain) to ``final``."""

    scaled: tuple[int, int]
    final: tuple[int, int]
    fit: str

    def anisotropic(self, size: tuple[int, int]) -> bool:
        """Does reaching ``scaled`` exactly take a different scale on each axis?"""
        return self.fit != "fill" and self.scaled[0] * size[1] != self.scaled[1] * size[0]

    def odd_centring(self, gravity: str) -> bool:
        """Is a centred window (cover) or image (contain) placed across an odd spare?"""
        if self.fit not in ("cover", "contain") or self.final == self.scaled:
            return False
        spare = [abs(f - s) for f, s in zip(self.final, self.scaled)]
        centred = [not any(w in gravity for w in ("west", "east")), not any(n in gravity for n in ("north", "south"))]
        return gravity not in ("attention", "entropy") and any(c and n % 2 for c, n in zip(centred, spare))


def plan(size: tuple[int, int], params: dict[str, Any]) -> Plan:
    """The documented table, in exact arithmetic, computed sides rounded half up."""
    width, height = size
    box_w, box_h, fit = params.get("width"), params.get("height"), params.get("fit", "inside")
    cap = (lambda s: s) if params.get("enlarge") else (lambda s: min(s, Fraction(1)))

    def side(length: int, scale: Fraction) -> int:
        return max(1, int(length * scale + Fraction(1, 2)))

    if fit == "fill":
        sx = cap(Fraction(box_w, width)) if box_w else Fraction(1)
        sy = cap(Fraction(box_h, height)) if box_h else Fraction(1)
        scaled = (side(width, sx), side(height, sy))
        return Plan(scaled, scaled, fit)
    if box_w is None or box_h is None:
        scale = cap(Fraction(box_w, width) if box_w else Fraction(box_h, height))
        scaled = (side(width, scale), side(height, scale))
        return Plan(scaled, scaled, "inside" if fit in ("cover", "contain") else fit)
    sx, sy = Fraction(box_w, width), Fraction(box_h, height)
    scale = cap(min(sx, sy) if fit in ("inside", "contain") else max(sx, sy))
    scaled = (side(width, scale), side(height, scale))
    if fit == "cover":
        return Plan(scaled, (min(box_w, scaled[0]), min(box_h, scaled[1])), fit)
    return Plan(scaled, (box_w, box_h) if fit == "contain" else scaled, fit)


def planned_stages(size: tuple[int, int], params: dict[str, Any]) -> list[Stage]:
    """pixq's documented resize in sharp's calls: stretch to the planned size exactly (``fill``),
    then cut or pad at spare // 2; a smart gravity is left to sharp's own smartcrop."""
    p = plan(size, params)
    stages: list[Stage] = [[{"op": "resize", "options": {"width": p.scaled[0], "height": p.scaled[1], "fit": "fill"}}]]
    gravity = params.get("gravity", "centre")
    if p.final == p.scaled:
        return stages
    if p.fit == "cover" and gravity in ("attention", "entropy"):
        stages.append([{"op": "resize", "options": {"width": p.final[0], "height": p.final[1], "fit": "cover",
                                                    "position": gravity}}])
    elif p.fit == "cover":
        x, y = compass_offset(gravity, p.scaled, p.final)
        stages.append([{"op": "extract", "region": {"left": x, "top": y, "width": p.final[0], "height": p.final[1]}}])
    else:
        x, y = compass_offset(gravity, p.final, p.scaled)
        stages.append([{"op": "extend", "top": y, "left": x, "bottom": p.final[1] - p.scaled[1] - y,
                        "right": p.final[0] - p.scaled[0] - x,
                        "background": rgba(params.get("background", "#ffffff"))}])
    return stages


def differences_by_design(size: tuple[int, int], params: dict[str, Any]) -> tuple[str, ...]:
    """The ACCEPTED geometry differences a resize of ``size`` shows, from the documented plan."""
    p = plan(size, params)
    names = []
    if p.anisotropic(size):
        names.append("axis-scale")
    if p.odd_centring(params.get("gravity", "centre")):
        names.append("centring")
    return tuple(names)


def rgb_profile(input: str) -> bool:
    """Does the input embed an ICC profile that pixq converts from (not grey, not CMYK)?"""
    image = pyvips.Image.new_from_file(str(fixture(input)))
    return (image.get_typeof("icc-profile-data") != 0 and image.bands >= 3
            and str(image.interpretation) not in ("cmyk", "b-w", "grey16"))


def wide(input: str) -> bool:
    """Is the input 16 bits per band (narrowed to 8 before pixq resizes it)?"""
    return pyvips.Image.new_from_file(str(fixture(input))).format == "ushort"


def resize(name: str, input: str, fmt: str = "png", **params: Any) -> Case:
    """A /resize job; where pixq's documented geometry differs from sharp's by design, the case
    names the difference and carries pixq's plan in sharp's calls as ``equivalent``. A resize of
    an input with an RGB profile takes the shrink-on-load path, which converts after shrinking."""
    params = {**params, "format": fmt}
    background = params.get("background", "#ffffff")
    size = oriented_size(input)
    stages = [[sharp_resize(params), *finishing(fmt, background)]]
    geometry = differences_by_design(size, params)
    alt = planned_stages(size, params) if geometry else None
    if alt:
        alt[-1] += finishing(fmt, background)
    accepted = (geometry + (("icc-after-shrink",) if rgb_profile(input) else ())
                + (("narrow-before-resize",) if wide(input) else ()))
    return Case(name, input, "resize", params, stages, fmt, accepted, alt)


def crop(name: str, input: str, fmt: str = "png", **params: Any) -> Case:
    """A /crop job: an x/y box, or width x height placed by a compass gravity. sharp has no
    gravity crop without a resize, so the window goes to sharp as the box pixq documents."""
    if "x" in params:
        box = {"left": params["x"], "top": params["y"], "width": params["width"], "height": params["height"]}
    else:
        x, y = compass_offset(params.get("gravity", "centre"), oriented_size(input),
                              (params["width"], params["height"]))
        box = {"left": x, "top": y, "width": params["width"], "height": params["height"]}
    stages = [[{"op": "extract", "region": box}, *finishing(fmt)]]
    return Case(name, input, "crop", {**params, "format": fmt}, stages, fmt)


def pipeline(name: str, input: str, steps: list[dict[str, Any]], variant: dict[str, Any],
             fmt: str = "png") -> Case:
    """A /jobs pipeline: the oriented input, then each step as its own sharp stage (sharp runs
    the calls of one pipeline in a fixed order of its own: flips before rotations), then the
    variant's resize and encoding."""
    stages: list[Stage] = [[]]
    size = oriented_size(input)
    for step in steps:
        op = step["op"]
        if op == "resize":
            stages.append([sharp_resize(step)])
            size = plan(size, step).final
        elif op == "crop":
            stages.append([{"op": "extract", "region": {"left": step["x"], "top": step["y"],
                                                       "width": step["width"], "height": step["height"]}}])
            size = (step["width"], step["height"])
        elif op == "rotate":
            stages.append([{"op": "rotate", "angle": step["angle"]}])
            size = (size[1], size[0]) if step["angle"] in (90, 270) else size
        elif op in ("flip", "flop"):
            stages.append([{"op": op}])
        else:
            raise ValueError(f"no sharp translation for step {op}")
    background = variant.get("background", "#ffffff")
    resizes = "width" in variant or "height" in variant
    accepted = differences_by_design(size, variant) if resizes else ()
    alt = None
    if accepted:
        alt = stages + planned_stages(size, variant)
        alt[-1] = alt[-1] + finishing(fmt, background)
    stages.append(([sharp_resize(variant)] if resizes else []) + finishing(fmt, background))
    params = {"steps": steps, "variants": [{"name": "out", **variant, "format": fmt}]}
    return Case(name, input, "pipeline", params, stages, fmt, accepted, alt)


GRAVITIES = ("centre", "north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")


def focused() -> list[Case]:
    cases: list[Case] = []
    # fit modes, on a photo (thumbnail path, shrink-on-load) and on a small PNG (enlarge)
    for fit in ("inside", "outside", "cover", "contain", "fill"):
        cases.append(resize(f"fit-{fit}-photo", JPEG_PHOTO, width=200, height=200, fit=fit))
        cases.append(resize(f"fit-{fit}-big-photo", BIG_PHOTO, width=300, height=200, fit=fit))
        cases.append(resize(f"fit-{fit}-enlarge", SMALL_PNG, width=150, height=120, fit=fit, enlarge=True))
        cases.append(resize(f"fit-{fit}-no-enlarge", SMALL_PNG, width=150, height=120, fit=fit))
    cases += [
        resize("one-side-width", JPEG_PHOTO, width=240),
        resize("one-side-height", JPEG_PHOTO, height=100),
        resize("one-side-cover", JPEG_PHOTO, width=240, fit="cover"),
        resize("one-side-fill", JPEG_PHOTO, width=240, fit="fill"),
        # exact halves: 198 x 450/600 = 148.5; 200 x 2160/3840 = 112.5 (the issue's case)
        resize("half-photo", JPEG_PHOTO, width=198),
        resize("half-gain-map", "sharp/gain-map.jpg", width=200),
        resize("contain-transparent", ALPHA_PNG, width=200, height=200, fit="contain", background="#00000000"),
        resize("contain-red", JPEG_PHOTO, width=200, height=200, fit="contain", background="#ff0000"),
    ]
    # gravity: cover 200x100 of 600x450 scales to 200x150 and cuts 50 rows (even: no centring question)
    for gravity in GRAVITIES + ("attention", "entropy"):
        cases.append(resize(f"cover-{gravity}", JPEG_PHOTO, width=200, height=100, fit="cover", gravity=gravity))
    for gravity in ("north", "east", "southwest"):
        cases.append(resize(f"contain-{gravity}", ALPHA_PNG, width=200, height=200, fit="contain", gravity=gravity))
    # odd spare: 200x150 cut to 200x101 leaves 49 rows; pixq starts at 49 // 2 = 24 (libvips' rule)
    cases.append(resize("cover-centre-odd-spare", JPEG_PHOTO, width=200, height=101, fit="cover"))
    # crop boxes (decode-first path), compass crops, orientation
    cases += [
        crop("box-corner", JPEG_PHOTO, x=0, y=0, width=100, height=100),
        crop("box-inner", JPEG_PHOTO, x=123, y=45, width=201, height=151),
        crop("box-whole", JPEG_PHOTO, x=0, y=0, width=600, height=450),
        crop("gravity-centre-odd", JPEG_PHOTO, width=201, height=151),
        crop("gravity-southeast", JPEG_PHOTO, width=200, height=100, gravity="southeast"),
    ]
    for n in range(1, 9):
        cases.append(resize(f"orient-landscape-{n}", f"sharp/Landscape_{n}.jpg", width=150, height=150))
        cases.append(crop(f"orient-portrait-{n}-box", f"sharp/Portrait_{n}.jpg", x=30, y=60, width=200, height=150))
    # colour: every input kind on the three paths (shrink-on-load resize, decode-first crop, pipeline)
    for kind, name in COLOUR_INPUTS.items():
        width, height = oriented_size(name)
        cases.append(resize(f"colour-{kind}-resize", name, width=max(1, width * 2 // 3)))
        cases.append(crop(f"colour-{kind}-crop", name, x=width // 8, y=height // 8,
                          width=width // 2, height=height // 2))
        cases.append(pipeline(f"colour-{kind}-pipeline", name, [{"op": "rotate", "angle": 90}],
                              {"width": max(1, height // 2)}))
    # formats out (and alpha onto JPEG), formats in
    for fmt in ("jpeg", "png", "webp", "avif"):
        cases.append(resize(f"out-{fmt}-photo", JPEG_PHOTO, fmt, width=300))
        cases.append(resize(f"out-{fmt}-alpha", ALPHA_PNG, fmt, width=200))
    cases += [
        resize("in-webp-alpha", "sharp/rotating-squares.webp", width=60),
        resize("in-avif", "sharp/pitm.avif", width=400),
        resize("in-gif-animated", "sharp/rotating-squares.gif", width=60),
        resize("in-tiff", "pillow/hopper.tif", width=100),
        resize("in-webp-animated", "sharp/animated-loop-3.webp", width=200),
    ]
    # pipelines: steps in order, sharp runs one stage per step
    cases += [
        pipeline("pipe-crop-resize", JPEG_PHOTO, [{"op": "crop", "x": 100, "y": 50, "width": 400, "height": 300}],
                 {"width": 200}),
        pipeline("pipe-resize-crop", JPEG_PHOTO, [{"op": "resize", "width": 300},
                                                  {"op": "crop", "x": 10, "y": 20, "width": 200, "height": 150}], {}),
        pipeline("pipe-flip-flop-jpeg", "sharp/Portrait_6.jpg", [{"op": "flip"}, {"op": "flop"}], {"width": 200},
                 "jpeg"),
    ]
    return cases


def full() -> list[Case]:
    """PIXQ_DIFF_FULL=1: the focused grid plus every orientation on every path and every
    colour input in every output format."""
    cases = focused()
    for n in range(1, 9):
        for side in ("Landscape", "Portrait"):
            name = f"sharp/{side}_{n}.jpg"
            cases.append(resize(f"full-orient-{side.lower()}-{n}-cover", name, width=150, height=100, fit="cover"))
            cases.append(crop(f"full-orient-{side.lower()}-{n}-gravity", name, width=200, height=150,
                              gravity="northeast"))
            cases.append(pipeline(f"full-orient-{side.lower()}-{n}-pipeline", name, [{"op": "rotate", "angle": 270}],
                                  {"width": 160}))
    for kind, name in COLOUR_INPUTS.items():
        width, _ = oriented_size(name)
        for fmt in ("jpeg", "webp", "avif"):
            cases.append(resize(f"full-colour-{kind}-{fmt}", name, fmt, width=max(1, width // 2)))
    for gravity in GRAVITIES:
        cases.append(crop(f"full-gravity-{gravity}", BIG_PHOTO, width=501, height=333, gravity=gravity))
        cases.append(resize(f"full-cover-tall-{gravity}", JPEG_PHOTO, width=100, height=300, fit="cover",
                            gravity=gravity, enlarge=True))
    return cases


def selected() -> list[Case]:
    """The grid this run uses: ``full()`` with PIXQ_DIFF_FULL=1 (`make test-differential-full`), else ``focused()``."""
    return full() if os.environ.get("PIXQ_DIFF_FULL") == "1" else focused()
