"""Helpers for the deployment tests: repo paths, the pinned kubectl and helm, rendered
kustomize overlays and Helm renders, vendored CRDs, and a pod's environment as the kubelet
would build it.

Everything comes from the repo itself: kubectl and helm from deploy/tools/bin (`make tools`
installs them at the versions pinned in deploy/tools/k8s-tools.toml), CRD schemas from
deploy/crds. A missing tool fails the tests that need it; nothing is skipped.
"""

import copy
import os
import re
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
HELM = DEPLOY / "helm"
CHART = HELM / "pixq"
CRDS = DEPLOY / "crds"
TOOLS_BIN = DEPLOY / "tools" / "bin"
HELM_VALUES = Path(__file__).resolve().parent / "helm-values"
OVERLAYS = ["dev", "prod", "prod-hpa", "prod-tls"]
# Helm renders (release "pixq" in namespace "pixq") checked by the same policy tests:
# name -> values files on top of the chart's values.yaml.
HELM_RENDERS = {
    "helm-default": [],
    "helm-prod": [HELM / "values-prod.yaml"],
    "helm-tls": [HELM_VALUES / "nats-tls.yaml"],
}
RENDERS = OVERLAYS + list(HELM_RENDERS)
KUBERNETES_VERSION = "1.30.0"  # kubernetes-validate ships schemas for it


def tool(name: str) -> str:
    """Path of the pinned kubectl or helm; fails (never skips) when `make tools` has not run."""
    path = TOOLS_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path.relative_to(REPO)} is missing: run `make tools` "
                    "(python deploy/tools/install_k8s_tools.py)")
    return str(path)


@lru_cache(maxsize=None)
def _helm_home() -> str:
    return tempfile.mkdtemp(prefix="pixq-helm-home-")


def run_helm(*args: str) -> subprocess.CompletedProcess:
    """helm with its config, cache and data in a private temp dir (no user repos or plugins)."""
    home = _helm_home()
    env = {**os.environ, "HELM_CONFIG_HOME": f"{home}/config", "HELM_CACHE_HOME": f"{home}/cache",
           "HELM_DATA_HOME": f"{home}/data", "KUBECONFIG": f"{home}/no-kubeconfig"}
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120, env=env)


def helm_args(values_files=(), sets=()) -> list[str]:
    args = []
    for path in values_files:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


@lru_cache(maxsize=None)
def helm_template(values_files: tuple = (), sets: tuple = ()) -> tuple:
    """`helm template pixq deploy/helm/pixq -n pixq` with these values; a tuple of dicts."""
    proc = run_helm("template", "pixq", str(CHART), "--namespace", "pixq",
                    "--kube-version", KUBERNETES_VERSION, *helm_args(values_files, sets))
    assert proc.returncode == 0, f"helm template {values_files} {sets} failed:\n{proc.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, "helm template rendered no objects"
    return docs


@lru_cache(maxsize=None)
def kustomize(path: str) -> tuple:
    """Render a kustomization with the pinned ``kubectl kustomize``; a tuple of dicts."""
    proc = subprocess.run([tool("kubectl"), "kustomize", str(K8S / path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, f"{path} rendered no objects"
    return docs


def objects(overlay: str) -> list[dict]:
    """A deep copy of an overlay's (or Helm render's) objects, so tests may mutate them."""
    if overlay in HELM_RENDERS:
        return copy.deepcopy(list(helm_template(tuple(str(p) for p in HELM_RENDERS[overlay]))))
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


def container(objs, kind, name, container_name=None) -> dict:
    """A workload's container (its first one unless named)."""
    found = containers(one(objs, kind, name), init=False)
    if container_name is None:
        return found[0]
    (match,) = [c for c in found if c["name"] == container_name]
    return match


@lru_cache(maxsize=None)
def load_crds() -> dict:
    """{(group/version, kind): openAPIV3Schema} for every CRD vendored in deploy/crds."""
    schemas = {}
    for path in sorted(CRDS.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    assert schemas, f"no CRD schemas found in {CRDS}"
    return schemas


# --- a pod's environment, as the kubelet builds it ---------------------------------------

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def secret_data(objs, name: str) -> dict[str, str] | None:
    """stringData of a rendered Secret, or None when the render expects an existing one."""
    found = find(objs, "Secret", name)
    return dict(found[0].get("stringData", {})) if found else None


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: references to defined variables are replaced."""
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def pod_env(objs, c: dict) -> dict[str, str]:
    """Environment of container ``c``: envFrom ConfigMaps, then env in order (secretKeyRef
    resolved from the rendered Secrets, $(VAR) expanded). Asserts every reference resolves,
    except an ``optional`` one, which, like the kubelet, leaves its variable unset."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"{c['name']}: envFrom other than a ConfigMap: {source}"
        env.update(one(objs, "ConfigMap", ref["name"])["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        ref = item["valueFrom"].get("secretKeyRef")
        if ref is None:
            env[item["name"]] = f"<{item['name']} from {item['valueFrom']}>"
            continue
        data = secret_data(objs, ref["name"])
        if ref.get("optional") and (data is None or ref["key"] not in data):
            continue
        assert data is not None, f"{c['name']}: env {item['name']} needs Secret {ref['name']}, not rendered"
        assert ref["key"] in data, f"{c['name']}: Secret {ref['name']} has no key {ref['key']}"
        env[item["name"]] = data[ref["key"]]
    return env


def materialize_secret_mounts(objs, workload: dict, c: dict, root: Path) -> dict[str, str]:
    """Write the files of ``c``'s Secret and ConfigMap volumes (e.g. PRESETS_FILE's) under
    ``root``; returns {mountPath: local dir}."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    mapped = {}
    for mount in c.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            source, name = volume["secret"], volume["secret"]["secretName"]
            data = secret_data(objs, name)
            what = f"Secret {name}"
        elif "configMap" in volume:
            source, name = volume["configMap"], volume["configMap"]["name"]
            found = find(objs, "ConfigMap", name)
            data = dict(found[0].get("data", {})) if found else None
            what = f"ConfigMap {name}"
        else:
            continue
        assert data is not None, f"{c['name']}: mounts {what}, not rendered"
        local = root / mount["mountPath"].strip("/")
        local.mkdir(parents=True, exist_ok=True)
        for item in source.get("items") or [{"key": k, "path": k} for k in data]:
            assert item["key"] in data, f"{what} has no key {item['key']}"
            (local / item["path"]).write_text(data[item["key"]])
        mapped[mount["mountPath"]] = str(local)
    return mapped


def local_paths(env: dict[str, str], mapped: dict[str, str]) -> dict[str, str]:
    """``env`` with paths under a mounted Secret rewritten to where materialize_ put them."""
    out = dict(env)
    for name, value in env.items():
        for mount, local in mapped.items():
            if value.startswith(mount.rstrip("/") + "/"):
                out[name] = local + value[len(mount.rstrip("/")):]
    return out


def which(name: str) -> str:
    """A server binary the system tests run (installed by `make test`'s system-deps)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH (make test installs it with apt)")
    return path
