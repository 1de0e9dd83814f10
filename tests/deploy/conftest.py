"""Shared fixtures for the deployment tests: repo paths, rendered kustomize overlays, CRDs.

The CRDs come from ``<repo>/../shared/crds`` (CI clones the repo with ``shared/`` beside
it); ``PIXQ_SHARED_DIR`` overrides that location.
"""

import copy
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ["dev", "prod", "prod-hpa"]
KUBERNETES_VERSION = "1.30.0"  # kubernetes-validate ships schemas for it


def shared_dir() -> Path:
    return Path(os.environ.get("PIXQ_SHARED_DIR", REPO.parent / "shared")).resolve()


@lru_cache(maxsize=None)
def kustomize(path: str) -> tuple:
    """Render a kustomization with ``kubectl kustomize``; returns a tuple of dicts."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is required to render deploy/k8s (kubectl kustomize)")
    proc = subprocess.run([kubectl, "kustomize", str(K8S / path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, f"{path} rendered no objects"
    return docs


def objects(overlay: str) -> list[dict]:
    """A deep copy of an overlay's rendered objects, so tests may mutate them."""
    return copy.deepcopy(list(kustomize(f"overlays/{overlay}")))


def find(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def one(objs, kind, name):
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def workloads(objs):
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def containers(workload, init=True):
    spec = workload["spec"]["template"]["spec"]
    out = list(spec.get("containers", []))
    if init:
        out += spec.get("initContainers", [])
    return out


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> str:
    return request.param


@pytest.fixture
def rendered(overlay) -> list[dict]:
    return objects(overlay)


@lru_cache(maxsize=None)
def load_crds() -> dict:
    """{(group/version, kind): openAPIV3Schema} for every CRD in shared/crds."""
    crd_dir = shared_dir() / "crds"
    assert crd_dir.is_dir(), (
        f"CRD directory {crd_dir} not found: shared/ must sit beside the repo "
        "(or set PIXQ_SHARED_DIR)")
    schemas = {}
    for path in sorted(crd_dir.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    assert schemas, f"no CRD schemas found in {crd_dir}"
    return schemas
