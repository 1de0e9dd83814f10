"""Every env var name in the manifests and chart is one pixq reads: a pixq.settings.Settings
field, the ``<NAME>_FILE`` form of a secret field, or one of the few variables that exist
only to be composed into a URL with $(VAR). And the environment a pod gets, built as the
kubelet builds it, is one pixq.settings accepts (or refuses, for the CHANGE_ME templates)."""

import re

import pytest
import yaml

import pixq.settings
from pixq.settings import Settings

from deploy_support import (CHART, DEPLOY, find, local_paths, materialize_secret_mounts, one,
                            pod_env)

SETTINGS = {name.upper() for name in Settings.model_fields}
SECRET_FIELDS = {name.upper() for name in getattr(
    pixq.settings, "SECRET_FIELDS",
    ("nats_url", "redis_url", "minio_access_key", "minio_secret_key", "url_signing_key", "api_keys",
     "admin_api_keys"))}
FILE_FORMS = {f"{name}_FILE" for name in SECRET_FIELDS}
# Read by nobody: a Secret's value made available for $(VAR) in NATS_URL / REDIS_URL.
COMPOSE_ONLY = {"NATS_PASSWORD", "REDIS_PASSWORD"}
KNOWN = SETTINGS | FILE_FORMS | COMPOSE_ONLY
PIXQ_DEPLOYMENTS = ("pixq-api", "pixq-worker")


def test_settings_fields_loaded():
    assert {"NATS_URL", "JOB_TIMEOUT", "WORKER_SHUTDOWN_GRACE", "TENANTS_FILE"} <= SETTINGS
    assert {"NATS_URL_FILE", "REDIS_URL_FILE", "MINIO_SECRET_KEY_FILE", "URL_SIGNING_KEY_FILE"} <= FILE_FORMS


def test_configmap_keys_are_settings(rendered):
    config = one(rendered, "ConfigMap", "pixq-config")["data"]
    unknown = set(config) - SETTINGS
    assert not unknown, f"ConfigMap pixq-config keys not in Settings: {sorted(unknown)}"
    assert config["STORAGE_TYPE"] == "minio"
    assert config["API_HOST"] == "0.0.0.0"
    assert not set(config) & (SECRET_FIELDS | FILE_FORMS), "secrets (and URLs with passwords) stay out of ConfigMaps"
    # Loading the ConfigMap as an environment must give valid Settings (apart from the
    # storage credentials, which only the Secret files hold).
    Settings(**{k.lower(): v for k, v in config.items()}, minio_access_key="x" * 8, minio_secret_key="y" * 8)


def test_storage_secret_keys_are_settings(rendered, overlay):
    secret = find(rendered, "Secret", "pixq-secrets")
    if overlay == "helm-prod":
        assert not secret, "helm-prod uses existing Secrets"
        return
    unknown = set(secret[0]["stringData"]) - SETTINGS
    assert not unknown, f"Secret pixq-secrets keys not in Settings: {sorted(unknown)}"


def test_deployment_env_names_are_known(rendered):
    for dep in PIXQ_DEPLOYMENTS:
        for c in one(rendered, "Deployment", dep)["spec"]["template"]["spec"]["containers"]:
            env = c.get("env", [])
            unknown = {e["name"] for e in env} - KNOWN
            assert not unknown, f"{dep}/{c['name']}: env not read by pixq: {sorted(unknown)}"
            for i, item in enumerate(env):
                if item["name"] in COMPOSE_ONLY:
                    assert "secretKeyRef" in item.get("valueFrom", {}), f"{dep}: {item['name']} not from a Secret"
                    later = " ".join(str(e.get("value", "")) for e in env[i + 1:])
                    assert f"$({item['name']})" in later, f"{dep}: {item['name']} is never composed into a URL"
            for src in c.get("envFrom", []):
                assert set(src) == {"configMapRef"}, f"{dep}: envFrom {src}: secrets are files or secretKeyRefs"
                one(rendered, "ConfigMap", src["configMapRef"]["name"])


def _pod_settings(objs, name, tmp_path) -> Settings:
    """Settings the way the pod builds them: env as the kubelet makes it, Secret files on disk."""
    workload = one(objs, "Deployment", name)
    c = workload["spec"]["template"]["spec"]["containers"][0]
    env = local_paths(pod_env(objs, c), materialize_secret_mounts(objs, workload, c, tmp_path / name))
    fields = {k.lower(): v for k, v in env.items() if k in SETTINGS}
    return Settings(**{**fields, **pixq.settings.secret_file_values(env)})


@pytest.mark.parametrize("name", PIXQ_DEPLOYMENTS)
def test_dev_overlay_pods_get_valid_settings(name, tmp_path):
    """The dev overlay runs as it is: its pods' environment and files are accepted."""
    from deploy_support import objects
    settings = _pod_settings(objects("dev"), name, tmp_path)
    user = name.removeprefix("pixq-")
    assert settings.nats_url == f"nats://pixq-{user}:dev-only-nats-{user}@pixq-nats:4222"
    assert settings.redis_url == "redis://:dev-only-redis@pixq-redis:6379/0"
    assert settings.minio_secret_key == "dev-only-minio-secret"
    # Both read the tenants and sign with the same keys: the API checks a callback_url's
    # signing secret and verifies download links the workers mint into webhook bodies.
    from pixq.tenants import parse_tenants_file
    tenants = parse_tenants_file(settings.tenants_file.read_text())
    assert {t.name for t in tenants} == {"default", "ops"}
    assert settings.url_signing_key == "dev-only-url-signing-key"
    assert settings.webhook_secret_list() == ["whsec_devOnlyWebhookSigningSecretForPixqDevOverlay"]
    assert settings.public_base_url() == "http://pixq.localtest.me"
    # PRESETS_FILE: the mounted ConfigMap pixq-presets, which pixq loads (empty: no presets or
    # ingest rules until an operator adds them).
    from pixq.presets import load_presets
    assert settings.presets_file is not None and settings.presets_file.name == "presets.yaml"
    catalogue = load_presets(settings)
    assert catalogue.presets == [] and catalogue.ingest == []


@pytest.mark.parametrize("name", PIXQ_DEPLOYMENTS)
def test_pods_start_without_webhook_secrets(name, tmp_path):
    """An install without webhooks: its pixq-secrets has no WEBHOOK_SECRETS key (created by
    hand, or Helm's secrets.values.WEBHOOK_SECRETS: ""); the pods' settings are still valid,
    with no global signing secret."""
    from deploy_support import objects
    objs = objects("dev")
    del one(objs, "Secret", "pixq-secrets")["stringData"]["WEBHOOK_SECRETS"]
    settings = _pod_settings(objs, name, tmp_path)
    assert settings.webhook_secret_list() == [] and settings.url_signing_key


@pytest.mark.parametrize("name", PIXQ_DEPLOYMENTS)
def test_webhook_secrets_placeholder_is_refused(name, tmp_path):
    """The template's whsec_CHANGE_ME, left in an otherwise complete Secret, stops the pod
    with a message naming WEBHOOK_SECRETS (replace it, or delete the key)."""
    from pydantic import ValidationError

    from deploy_support import objects
    template = one(objects("prod"), "Secret", "pixq-secrets")["stringData"]["WEBHOOK_SECRETS"]
    objs = objects("dev")
    one(objs, "Secret", "pixq-secrets")["stringData"]["WEBHOOK_SECRETS"] = template
    with pytest.raises(ValidationError, match="WEBHOOK_SECRETS: holds the placeholder"):
        _pod_settings(objs, name, tmp_path)


def test_public_url_is_the_ingress(rendered):
    """PUBLIC_URL (links in webhooks) is where the Ingress serves the API: its host, https
    exactly when the Ingress has TLS."""
    config = one(rendered, "ConfigMap", "pixq-config")["data"]
    ingress = one(rendered, "Ingress", "pixq-api")["spec"]
    scheme = "https" if ingress.get("tls") else "http"
    assert config["PUBLIC_URL"] == f"{scheme}://{ingress['rules'][0]['host']}"
    assert Settings(public_url=config["PUBLIC_URL"]).public_base_url() == config["PUBLIC_URL"]


@pytest.mark.parametrize("overlay", ["prod", "helm-default"])
@pytest.mark.parametrize("name", PIXQ_DEPLOYMENTS)
def test_templates_are_refused_until_replaced(overlay, name, tmp_path):
    """The CHANGE_ME templates cannot run by accident: pixq refuses the pods' settings."""
    from pydantic import ValidationError

    from deploy_support import objects
    with pytest.raises((ValidationError, SystemExit)):
        _pod_settings(objects(overlay), name, tmp_path)


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


def test_chart_template_env_names_are_known():
    text = (CHART / "templates" / "configmap.yaml").read_text()
    keys = set(re.findall(r"^  ([A-Z][A-Z0-9_]*):", text, re.M))
    assert keys, "no literal keys found in the chart ConfigMap template"
    unknown = keys - SETTINGS
    assert not unknown, f"chart configmap.yaml keys not in Settings: {sorted(unknown)}"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    start, end = helpers.index('define "pixq.connectionEnv"'), helpers.index('define "pixq.connectionMounts"')
    env_names = set(re.findall(r"- name: ([A-Z][A-Z0-9_]*)\s*$", helpers[start:end], re.M))
    assert {"NATS_URL", "REDIS_URL", "TENANTS_FILE"} <= env_names
    unknown = env_names - KNOWN
    assert not unknown, f"chart pixq.connectionEnv: env not read by pixq: {sorted(unknown)}"
