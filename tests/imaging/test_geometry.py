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
    # cover with one side is 'inside' (sharp's rule, applied by the spec)
    assert plan_resize(400, 300, ResizeOptions(width=100, fit="cover")).final == (100, 75)


def test_extreme_aspect_never_zero():
    assert plan_resize(10000, 1, ResizeOptions(width=10, height=10)).final == (10, 1)


@pytest.mark.parametrize("gravity, offset", [
    ("centre", (50, 25)), ("north", (50, 0)), ("south", (50, 50)), ("east", (100, 25)),
    ("west", (0, 25)), ("northeast", (100, 0)), ("northwest", (0, 0)), ("southeast", (100, 50)),
    ("southwest", (0, 50)),
])
def test_gravity_offset(gravity, offset):
    assert gravity_offset(gravity, (200, 100), (100, 50)) == offset
