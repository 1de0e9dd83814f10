"""Every env var name in the manifests and chart is a pixq.settings.Settings field."""

import re

import pytest
import yaml

from pixq.settings import Settings

from deploy_support import DEPLOY, find, one

SETTINGS = {name.upper() for name in Settings.model_fields}
CHART = DEPLOY / "helm" / "pixq"
PIXQ_DEPLOYMENTS = ("pixq-api", "pixq-worker")


def test_settings_fields_loaded():
    assert {"NATS_URL", "JOB_TIMEOUT", "WORKER_SHUTDOWN_GRACE"} <= SETTINGS


def test_configmap_and_secret_keys_are_settings(rendered, overlay):
    config = one(rendered, "ConfigMap", "pixq-config")["data"]
    unknown = set(config) - SETTINGS
    assert not unknown, f"ConfigMap pixq-config keys not in Settings: {sorted(unknown)}"
    assert config["STORAGE_TYPE"] == "minio"
    assert config["API_HOST"] == "0.0.0.0"
    for secret in find(rendered, "Secret"):  # helm-prod uses an existing Secret instead
        unknown = set(secret.get("stringData", {})) - SETTINGS
        assert not unknown, f"Secret {secret['metadata']['name']} keys not in Settings: {sorted(unknown)}"
    if overlay != "helm-prod":
        one(rendered, "Secret", "pixq-secrets")
    # Loading the ConfigMap as an environment must give valid Settings.
    Settings(**{k.lower(): v for k, v in config.items()})


def test_deployment_env_names_are_settings(rendered):
    names = {o["metadata"]["name"] for o in find(rendered, "ConfigMap") + find(rendered, "Secret")}
    for dep in PIXQ_DEPLOYMENTS:
        for c in one(rendered, "Deployment", dep)["spec"]["template"]["spec"]["containers"]:
            unknown = {e["name"] for e in c.get("env", [])} - SETTINGS
            assert not unknown, f"{dep}/{c['name']}: env not in Settings: {sorted(unknown)}"
            for src in c.get("envFrom", []):
                ref = src.get("configMapRef") or src.get("secretRef")
                if "secretRef" in src and not find(rendered, "Secret"):
                    continue  # an existing Secret (helm secrets.existingSecret)
                assert ref["name"] in names, f"{dep}: envFrom {ref['name']} not rendered"
                assert not src.get("prefix"), f"{dep}: envFrom prefix would rename settings"


def _chart_values(path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("values_file", [CHART / "values.yaml", DEPLOY / "helm" / "values-prod.yaml"],
                         ids=lambda p: p.name)
def test_chart_values_keys_are_settings(values_file):
    values = _chart_values(values_file)
    unknown = set(values.get("config", {})) - SETTINGS
    assert not unknown, f"{values_file.name}: config keys not in Settings: {sorted(unknown)}"
    unknown = set(values.get("secrets", {}).get("values", {})) - SETTINGS
    assert not unknown, f"{values_file.name}: secrets.values keys not in Settings: {sorted(unknown)}"


def test_chart_template_env_names_are_settings():
    text = (CHART / "templates" / "configmap.yaml").read_text()
    keys = set(re.findall(r"^  ([A-Z][A-Z0-9_]*):", text, re.M))
    assert keys, "no literal keys found in the chart ConfigMap template"
    unknown = keys - SETTINGS
    assert not unknown, f"chart configmap.yaml keys not in Settings: {sorted(unknown)}"
    for name in ("api.yaml", "worker.yaml"):
        env_names = set(re.findall(r"- name: ([A-Z][A-Z0-9_]*)\s*$", (CHART / "templates" / name).read_text(), re.M))
        unknown = env_names - SETTINGS
        assert not unknown, f"chart {name}: env not in Settings: {sorted(unknown)}"
