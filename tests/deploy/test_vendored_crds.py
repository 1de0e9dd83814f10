"""deploy/crds: the CRD schemas the tests validate against are in the repo, unmodified
(checksums as listed in its README), with their projects' licences."""

import hashlib
import re

import pytest

from deploy_support import CRDS, load_crds

README = (CRDS / "README.md").read_text()
LISTED = dict(re.findall(r"^\| `([^`]+\.yaml)` \|.*\| `([0-9a-f]{64})` \|$", README, re.M))


def test_readme_lists_every_vendored_file():
    files = {str(p.relative_to(CRDS)) for p in CRDS.rglob("*.yaml")}
    assert files and files == set(LISTED), f"deploy/crds/README.md lists {sorted(LISTED)}, found {sorted(files)}"


@pytest.mark.parametrize("name", sorted(LISTED))
def test_vendored_crd_is_unmodified(name):
    digest = hashlib.sha256((CRDS / name).read_bytes()).hexdigest()
    assert digest == LISTED[name], f"{name} differs from the upstream file README.md records"


def test_each_project_carries_its_licence():
    for project in {p.parent for p in CRDS.rglob("*.yaml")}:
        licence = (project / "LICENSE").read_text()
        assert "Apache License" in licence and "Version 2.0" in licence, project.name
    assert (CRDS / "prometheus-operator" / "NOTICE").exists(), "Apache-2.0 section 4(d): keep the NOTICE"


def test_schemas_cover_the_custom_resources_pixq_renders():
    kinds = {kind for _, kind in load_crds()}
    assert {"ScaledObject", "TriggerAuthentication", "PodMonitor", "ServiceMonitor", "PrometheusRule"} <= kinds
