"""pixq's engine held against sharp, the peer on the same libvips (issue 15, item 3).

Each case of the grid (tests/differential/grid.py: fit modes, gravities, crop boxes, formats,
EXIF orientations, alpha, palette, 16-bit, grey and CMYK with and without ICC profiles, on the
shrink-on-load, decode-first and pipeline paths) runs through ``worker.imaging.process`` and
through sharp, and must agree:

* sizes exactly, output format and bands exactly, except a difference named in ACCEPTED;
* pixels within TOLERANCE for the output format (MAD: mean absolute difference per band and
  pixel; max: largest difference, both on the 0-255 scale; tests/differential/compare.py).

A geometric difference pixq makes by design (ACCEPTED) is checked, not waved through: the case
then also renders pixq's documented rule in sharp's own calls (``Case.equivalent``) and pixq
must match *that* within the same tolerance. A difference not in ACCEPTED fails; so does an
accepted one that no longer shows (the list in docs/operations.md would be stale).
PENDING lists cases that fail only until a named engine fix lands; they run as strict xfails,
so the fix turns them into failures that ask for their removal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pixq.limits import TRUSTED_INPUT_FORMATS, Limits
from pixq.spec import to_pipeline
from tests.differential.compare import Difference, compare
from tests.differential.grid import Case, selected
from tests.fixtures import fixture
from worker.imaging import Rendered, process

CASES = selected()

ACCEPTED = {
    "centring": "A centred crop window (cover) or padded image (contain) across an odd spare starts at "
                "spare // 2, libvips' own rule; sharp rounds the other way, (spare + 1) // 2. One pixel, by "
                "design: pixq keeps libvips' convention. Literal MAD 7.1-14.8 on cover of a photo (the window shifts).",
    "axis-scale": "pixq scales each axis to the exact planned size (libvips' thumbnail with size=force); "
                  "sharp scales both axes by one factor and rounds the computed side. Where that side is not "
                  "a whole number the two differ by a sub-pixel stretch (< 1 px over the whole side): "
                  "literal MAD 0.02-2.0 in PNG (3.1 in a JPEG output), max up to 49 at edges, on the grid's photos.",
    "icc-after-shrink": "An input with an embedded RGB ICC profile, resized on the shrink-on-load path, is "
                        "converted to sRGB after the shrink (libvips' thumbnail order: the transform runs on "
                        "the small image; converting first costs +28% on gain-map.jpg to 512, 37.0 -> 47.4 ms, "
                        "+20% on Landscape_2.jpg); sharp converts before resizing, and so does "
                        "pixq's decode-first path. Measured on Landscape_2.jpg: MAD 0.63-0.70, max 22 in PNG; "
                        "JPEG/WebP/AVIF outputs amplify it to MAD 2.3-3.1, max 41 (bounds: BOUNDED).",
    "grey-kept-grey": "A grey input stays one band (two with alpha) in pixq, as documented; sharp writes "
                      "sRGB with three (four) bands. The pixels are compared after expanding pixq's grey to "
                      "sRGB, and sharp's image must itself be grey (R = G = B). Lossy outputs also differ in "
                      "encoding (a one-band JPEG has no chroma; sharp's has 4:2:0): MAD 0.44, max 25 measured "
                      "on grey-8bit-alpha.png to JPEG.",
    "narrow-before-resize": "A 16-bit input is narrowed to 8 bits (the high byte of each band, as sharp "
                            "narrows) before pixq resizes it, on every path, so a resize, a crop and a pipeline "
                            "of one image agree; sharp resizes in 16 bits and narrows after. One level at most "
                            "(bggn4a16.png to width 21: MAD 0.455, max 1.8 in PNG; WebP MAD 1.04). Resizing in 16 "
                            "bits was tried: MAD 0.095 but max 2.7, still not sharp's pixels, and two resize rules.",
}
"""Every difference pixq accepts against sharp, with its reason (docs/operations.md, "Against sharp")."""

TOLERANCE = {"png": (0.1, 2.0), "jpeg": (1.0, 16.0), "webp": (1.0, 16.0), "avif": (2.0, 48.0)}
"""(MAD, max) per output format, for the same operation on both sides. PNG is lossless: only
arithmetic rounding may differ (a level or two, e.g. where 16 bits become 8). The lossy formats add
their encoders' noise on top (pyvips' libjpeg-turbo vs sharp's mozjpeg in baseline mode, libwebp,
libaom: AVIF's edges differ most)."""

BOUNDED = {
    "icc-after-shrink": {"png": (1.0, 24.0), "lossy": (2.5, 32.0)},
    "grey-kept-grey": {"png": (0.0, 0.0), "lossy": (0.5, 16.0)},
    "narrow-before-resize": {"png": (0.4, 0.0), "lossy": (0.5, 0.0)},
}
"""Accepted differences that cannot be rendered in sharp's calls, held to a measured bound added to
the format's tolerance instead. Lossy encoders amplify a difference in their input (the DCT blocks
quantise differently), and a one-band JPEG is encoded without chroma where sharp's has 4:2:0."""

CHROMA = {"png": 0.0, "jpeg": 3.0, "webp": 3.0, "avif": 3.0}
"""Largest |R - G|, |G - B| of sharp's output for "grey-kept-grey" (lossy encoders may tint by a level or two)."""

PENDING: dict[str, str] = {}
"""case id -> the engine fix it waits for (strict xfail)."""

LIMITS = Limits(max_input_bytes=50 << 20, max_input_pixels=50_000_000, max_output_pixels=50_000_000,
                max_animation_frames=100, allowed_input_formats=TRUSTED_INPUT_FORMATS)
SHARP_FORMAT = {"jpeg": "jpeg", "png": "png", "webp": "webp", "avif": "heif"}
"""What sharp's (and libvips') loader calls each output format."""


def params_for(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=PENDING[case.id])] if case.id in PENDING else []
    return pytest.param(case, id=case.id, marks=marks)


def test_sharp_is_the_pinned_release(sharp_session):
    """The session fixture already refused a different libvips; this names the sharp in use."""
    pinned = json.loads((Path(__file__).parent / "package.json").read_text())["dependencies"]["sharp"]
    assert sharp_session["versions"]["versions"]["sharp"] == pinned
    assert sharp_session["versions"]["concurrency"] == 1 and sharp_session["versions"]["cache"]["items"]["max"] == 0


def test_every_case_names_only_known_differences():
    unknown = {name for case in CASES for name in case.accepted} - set(ACCEPTED)
    assert not unknown, f"cases name differences missing from ACCEPTED: {unknown}"
    assert not set(PENDING) - {case.id for case in CASES}, "PENDING names a case that is not in the grid"


SHOWS_BOUNDED = {"icc-after-shrink": "colour-rgb-icc-jpeg-resize", "grey-kept-grey": "colour-grey-noicc-resize",
                 "narrow-before-resize": "colour-grey16-alpha-resize"}
"""A case on which each BOUNDED difference shows (and must: otherwise drop it from ACCEPTED)."""


def pixq_output(case: Case) -> Rendered:
    """The case through the engine's public entry, exactly as a worker runs the job."""
    return process(fixture(case.input).read_bytes(), to_pipeline(case.job, case.params), LIMITS)[0]


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_bounded_differences_still_show(name, sharp_session):
    assert set(SHOWS_BOUNDED) == set(BOUNDED)
    case = next(case for case in CASES if case.id == SHOWS_BOUNDED[name])
    diff = compare(pixq_output(case).data, sharp_session["cases"][case.id]["literal"].read_bytes())
    mad_limit, max_limit = TOLERANCE[case.format]
    shows = (diff.pixq.bands < diff.sharp.bands if name == "grey-kept-grey"
             else diff.mad > mad_limit or diff.max > max_limit)
    assert shows, (
        f"{name!r} no longer shows on {case.id} (MAD {diff.mad}, max {diff.max}): "
        "drop it from ACCEPTED, the grid and docs/operations.md")


def _verdict(case: Case, pixq_format: str, literal: Difference, equivalent: Difference | None) -> tuple[list[str], str]:
    """Problems (empty: the case passes) and which comparison decided it."""
    problems: list[str] = []
    sharp_format = SHARP_FORMAT[case.format]
    if pixq_format != case.format or literal.pixq.format != sharp_format or literal.sharp.format != sharp_format:
        problems.append(f"format: asked {case.format}, pixq wrote {literal.pixq.format}, sharp {literal.sharp.format}")
    if not literal.same_size:
        problems.append(f"size: pixq {literal.pixq.width}x{literal.pixq.height}, "
                        f"sharp {literal.sharp.width}x{literal.sharp.height}")
        return problems, "literal"
    if literal.pixq.alpha != literal.sharp.alpha:
        problems.append(f"alpha: pixq {literal.pixq.bands} bands, sharp {literal.sharp.bands}")
    names = list(case.accepted)
    if literal.pixq.grey != literal.sharp.grey:
        if literal.pixq.grey and literal.chroma is not None and literal.chroma <= CHROMA[case.format]:
            names.append("grey-kept-grey")
        else:
            problems.append(f"bands: pixq {literal.pixq.bands}, sharp {literal.sharp.bands} "
                            f"(sharp's chroma {literal.chroma})")
    mad_limit, max_limit = TOLERANCE[case.format]
    for name in names:
        if name in BOUNDED:
            extra_mad, extra_max = BOUNDED[name]["png" if case.format == "png" else "lossy"]
            mad_limit, max_limit = mad_limit + extra_mad, max_limit + extra_max

    def within(diff: Difference) -> bool:
        return diff.same_size and diff.mad <= mad_limit and diff.max <= max_limit

    def stale(names: list[str]) -> None:
        for name in names:
            problems.append(f"accepted difference {name!r} no longer shows on this case: update ACCEPTED, "
                            "the grid and docs/operations.md")

    if within(literal):
        # a centred window across an odd spare always shows the pixel (a bounded difference may
        # not show on every image: test_bounded_differences_still_show holds those)
        stale([name for name in case.accepted if name == "centring"])
        return problems, "literal"
    if equivalent is not None and within(equivalent):
        return problems, "equivalent"
    worst = equivalent if equivalent is not None and equivalent.same_size else literal
    problems.append(f"pixels: MAD {worst.mad} (limit {mad_limit}), max {worst.max} (limit {max_limit})"
                    + (f"; literal MAD {literal.mad} max {literal.max}" if worst is not literal else "")
                    + (f"; accepted {', '.join(case.accepted)} checked against pixq's rule in sharp's calls"
                       if case.accepted else ""))
    return problems, "equivalent" if worst is not literal else "literal"


@pytest.mark.parametrize("case", [params_for(case) for case in CASES])
def test_case_matches_sharp(case: Case, sharp_session, figures):
    rendered = sharp_session["cases"][case.id]
    assert isinstance(rendered["literal"], Path), f"sharp failed: {rendered['literal']}"
    output = pixq_output(case)
    literal = compare(output.data, rendered["literal"].read_bytes())
    equivalent = None
    if case.equivalent is not None:
        assert isinstance(rendered["equivalent"], Path), f"sharp failed on the equivalent: {rendered['equivalent']}"
        equivalent = compare(output.data, rendered["equivalent"].read_bytes())
    problems, decided_by = _verdict(case, output.format, literal, equivalent)
    shown = equivalent if decided_by == "equivalent" else literal
    figures.append({"case": case.id, "input": case.input, "job": case.job, "format": case.format,
                    "size": f"{literal.pixq.width}x{literal.pixq.height}"
                    + ("" if literal.same_size else f" / {literal.sharp.width}x{literal.sharp.height}"),
                    "bands": f"{literal.pixq.bands}/{literal.sharp.bands}", "mad": shown.mad, "max": shown.max,
                    "vs": decided_by + (f" (literal MAD {literal.mad})" if decided_by == "equivalent" else ""),
                    "accepted": ", ".join(case.accepted + (("grey-kept-grey",) if literal.pixq.grey
                                                            and not literal.sharp.grey else ())),
                    "verdict": "; ".join(problems) or "ok"})
    assert not problems, f"{case.id} ({case.job} {case.input} -> {case.format}): " + "; ".join(problems)
