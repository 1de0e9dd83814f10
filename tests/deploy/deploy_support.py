"""Helpers for the deployment tests: repo paths, rendered kustomize overlays and Helm
renders, CRDs.

The CRDs come from ``<repo>/../shared/crds`` (CI clones the repo with ``shared/`` beside
it); ``PIXQ_SHARED_DIR`` overrides that location.
"""

import copy
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ["dev", "prod", "prod-hpa"]
# Helm renders (release "pixq" in namespace "pixq") checked by the same policy tests.
HELM_RENDERS = {"helm-default": "default", "helm-prod": "values-prod"}
RENDERS = OVERLAYS + list(HELM_RENDERS)
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


@lru_cache(maxsize=None)
def helm_lint_run() -> subprocess.CompletedProcess:
    """Run deploy/helm/lint.sh once per session (lint + render into a temp dir).

    Needs Python >= 3.12 for helm-sdkpy; if none is found lint.sh exits non-zero and every
    test using it fails (deliberately not skipped)."""
    render_dir = Path(tempfile.mkdtemp(prefix="pixq-helm-render-"))
    env = {**os.environ, "HELM_RENDER_DIR": str(render_dir)}
    proc = subprocess.run(["bash", str(DEPLOY / "helm" / "lint.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    proc.render_dir = render_dir
    return proc


@lru_cache(maxsize=None)
def helm_rendered(name: str) -> tuple:
    proc = helm_lint_run()
    assert proc.returncode == 0, (
        f"deploy/helm/lint.sh failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    path = proc.render_dir / f"{HELM_RENDERS[name]}.yaml"
    assert path.exists(), f"lint.sh did not render {path}"
    return tuple(d for d in yaml.safe_load_all(path.read_text()) if d)


def objects(overlay: str) -> list[dict]:
    """A deep copy of an overlay's (or Helm render's) objects, so tests may mutate them."""
    if overlay in HELM_RENDERS:
        return copy.deepcopy(list(helm_rendered(overlay)))
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
