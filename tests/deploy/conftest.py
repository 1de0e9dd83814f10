"""Fixtures for tests/deploy: ``overlay`` (each kustomize overlay and Helm render) and
``rendered`` (its objects). Helpers live in deploy_support.py (a distinct module name, so
it never collides with another directory's conftest)."""

import pytest

from deploy_support import RENDERS, objects


@pytest.fixture(params=RENDERS)
def overlay(request) -> str:
    return request.param


@pytest.fixture
def rendered(overlay) -> list[dict]:
    return objects(overlay)
