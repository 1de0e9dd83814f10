"""The fit-mode arithmetic (the table in docs/operations.md)."""

import pytest

from pixq.spec import ResizeOptions
from worker.imaging.geometry import gravity_offset, plan_resize


@pytest.mark.parametrize("fit, scaled, final", [
    ("inside", (200, 150), (200, 150)),
    ("outside", (267, 200), (267, 200)),
    ("cover", (267, 200), (200, 200)),
    ("contain", (200, 150), (200, 200)),
    ("fill", (200, 200), (200, 200)),
])
def test_fit_400x300_into_200x200(fit, scaled, final):
    plan = plan_resize(400, 300, ResizeOptions(width=200, height=200, fit=fit))
    assert (plan.scaled, plan.final) == (scaled, final)


@pytest.mark.parametrize("fit, enlarge, scaled, final", [
    ("inside", False, (100, 75), (100, 75)),
    ("inside", True, (200, 150), (200, 150)),
    ("outside", True, (267, 200), (267, 200)),
    ("cover", False, (100, 75), (100, 75)),
    ("cover", True, (267, 200), (200, 200)),
    ("contain", False, (100, 75), (200, 200)),
    ("fill", False, (100, 75), (100, 75)),
    ("fill", True, (200, 200), (200, 200)),
])
def test_enlarge(fit, enlarge, scaled, final):
    plan = plan_resize(100, 75, ResizeOptions(width=200, height=200, fit=fit, enlarge=enlarge))
    assert (plan.scaled, plan.final) == (scaled, final)


def test_one_side_keeps_aspect():
    assert plan_resize(400, 300, ResizeOptions(width=100)).final == (100, 75)
    assert plan_resize(400, 300, ResizeOptions(height=100)).final == (133, 100)
    # cover and contain with one side are 'inside' (as in sharp, applied by the spec)
    assert plan_resize(400, 300, ResizeOptions(width=100, fit="cover")).final == (100, 75)
    assert plan_resize(400, 300, ResizeOptions(width=100, fit="contain")).final == (100, 75)


@pytest.mark.parametrize("options, size", [
    (dict(width=100), (100, 300)),                      # the other side is the input's (sharp)
    (dict(height=100), (400, 100)),
    (dict(width=800), (400, 300)),                      # never enlarged by default
    (dict(width=800, enlarge=True), (800, 300)),
])
def test_fill_with_one_side_stretches_that_side_only(options, size):
    plan = plan_resize(400, 300, ResizeOptions(fit="fill", **options))
    assert plan.fit == "fill" and plan.scaled == plan.final == size


@pytest.mark.parametrize("size, options, expected", [
    ((3840, 2160), dict(width=200), (200, 113)),        # 112.5: gain-map.jpg, libvips and sharp give 113
    ((4, 3), dict(width=2), (2, 2)),                    # 1.5
    ((400, 100), dict(width=20), (20, 5)),              # 5.0 exactly: no rounding at all
    ((200, 5), dict(width=20), (20, 1)),                # 0.5 -> 1
    ((2, 5), dict(width=1), (1, 3)),                    # 2.5 -> 3 (round() gave 2)
    ((5, 2), dict(height=1), (3, 1)),
    ((300, 200), dict(width=100, height=100, fit="outside"), (150, 100)),
    ((300, 100), dict(width=100, height=100, fit="fill"), (100, 100)),
])
def test_a_computed_side_rounds_half_up(size, options, expected):
    assert plan_resize(*size, ResizeOptions(**options)).scaled == expected


def test_extreme_aspect_never_zero():
    assert plan_resize(10000, 1, ResizeOptions(width=10, height=10)).final == (10, 1)


@pytest.mark.parametrize("gravity, offset", [
    ("centre", (50, 25)), ("north", (50, 0)), ("south", (50, 50)), ("east", (100, 25)),
    ("west", (0, 25)), ("northeast", (100, 0)), ("northwest", (0, 0)), ("southeast", (100, 50)),
    ("southwest", (0, 50)),
])
def test_gravity_offset(gravity, offset):
    assert gravity_offset(gravity, (200, 100), (100, 50)) == offset
