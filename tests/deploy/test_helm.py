"""The Helm chart lints clean (deploy/helm/lint.sh, helm-sdkpy) and its values are sane."""

import json
import jsonschema
import pytest
import yaml

from pixq.settings import Settings
from pixq.units import parse_duration


from deploy_support import DEPLOY, HELM_RENDERS, helm_lint_run, objects
from k8s_validation import validation_errors

HELM = DEPLOY / "helm"
CHART = HELM / "pixq"


def merged_values(*files):
    def merge(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return {**a, **{k: merge(a.get(k), v) if k in a else v for k, v in b.items()}}
        return b
    values = {}
    for f in files:
        values = merge(values, yaml.safe_load(f.read_text()) or {})
    return values


VALUE_SETS = {
    "default": [CHART / "values.yaml"],
    "prod": [CHART / "values.yaml", HELM / "values-prod.yaml"],
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_values_match_schema(name):
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(merged_values(*VALUE_SETS[name]), schema)


def test_schema_rejects_bad_values():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = merged_values(CHART / "values.yaml")
    for path, bad in ((("worker", "autoscaling", "mode"), "sometimes"),
                      (("nats", "replicas"), 2),
                      (("config", "NATS_URL"), "nats://elsewhere:4222")):
        broken = json.loads(json.dumps(values))
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_worker_grace_in_chart(name):
    values = merged_values(*VALUE_SETS[name])
    fields = Settings.model_fields
    config = values["config"]
    need = parse_duration(config.get("JOB_TIMEOUT", fields["job_timeout"].default)) + \
        parse_duration(config.get("WORKER_SHUTDOWN_GRACE", fields["worker_shutdown_grace"].default))
    assert values["worker"]["terminationGracePeriodSeconds"] > need


def test_prod_values_are_production_like():
    values = merged_values(*VALUE_SETS["prod"])
    assert values["worker"]["autoscaling"]["mode"] == "keda"
    assert values["worker"]["autoscaling"]["minReplicas"] >= 3
    assert values["nats"]["replicas"] == 3 and values["minio"]["replicas"] == 4
    assert values["api"]["ingress"]["tls"], "prod ingress must use TLS"
    assert values["image"]["tag"] not in ("", "latest")
    assert not values["secrets"]["create"] or all(
        "CHANGE_ME" not in v for v in values["secrets"]["values"].values())


def test_chart_templates_hardcode_the_right_jetstream_names():
    import pixq.names
    text = (CHART / "templates" / "worker.yaml").read_text()
    assert f'stream: "{pixq.names.JOBS_STREAM}"' in text
    assert f'consumer: "{pixq.names.WORKERS_CONSUMER}"' in text


def test_helm_lint():
    """Runs deploy/helm/lint.sh: helm lint with default and prod values, then renders both
    and validates them with kubernetes-validate. Needs python3.12 (for helm-sdkpy); a
    missing interpreter fails this test, it is not skipped."""
    proc = helm_lint_run()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"deploy/helm/lint.sh failed ({proc.returncode}):\n{output[-4000:]}"
    assert output.count("0 warning/error message(s)") == 2, output
    assert output.count("kubernetes-validate 1.30.0 (strict) OK") == 2, output


@pytest.mark.parametrize("name", sorted(HELM_RENDERS))
def test_helm_render_validates(name):
    """Helm's output validates like the kustomize overlays, custom resources included."""
    errors = validation_errors(objects(name))
    assert not errors, "\n".join(errors)


def test_helm_render_matches_kustomize_kinds():
    """Chart and kustomize install the same system (same kinds and names, prod flavour)."""
    def inventory(objs):
        return {(o["kind"], o["metadata"]["name"]) for o in objs
                if o["kind"] not in {"Namespace", "NetworkPolicy", "Secret"}}
    helm = inventory(objects("helm-default"))
    kust = inventory(objects("prod"))
    assert helm == kust, f"only in helm: {sorted(helm - kust)}; only in kustomize: {sorted(kust - helm)}"
